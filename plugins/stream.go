package plugins

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/vmlineage/vmlineage/plugins/proto"
)

// Enrich calls over one long-lived gRPC stream per detector process
// (Detector.EnrichStream). A unary call opens an HTTP/2 stream, sends and
// parses headers and trailers and starts a handler for every alert; on the
// stream a call is one message each way. The host uses it for detectors
// that announce it in Configure (every detector built with this SDK) and
// unary Enrich for older ones.

// streamQueue bounds the calls waiting to be written to one detector: a
// detector that stopped reading (a stopped process) fails calls at once
// beyond it instead of piling them up; its calls time out meanwhile.
const streamQueue = 256

// maxStreamMsg is gRPC's default limit on a message received, which each
// side applies to every message on the stream. A larger one would end the
// stream, failing every call on it; it fails alone instead, as a unary
// call would.
const maxStreamMsg = 4 << 20

// maxIDSize is the most an EnrichCall's id adds to its size: its tag and a
// varint of up to 10 bytes.
const maxIDSize = 1 + 10

// workerIdle is how long a detector's stream worker waits for another
// call before it ends (a burst leaves no idle goroutines behind for good).
const workerIdle = time.Minute

// errStreamFull is returned when a detector has streamQueue calls waiting
// to be written.
var errStreamFull = status.Error(codes.ResourceExhausted, "detector is not reading its calls")

// enrichStream is the host's end of one EnrichStream. Calls are written
// by one goroutine (a write can block on flow control when the detector
// stops reading, and no call may wait on that beyond its deadline) and
// answered by another, which hands each reply to its caller by id.
type enrichStream struct {
	st     pb.Detector_EnrichStreamClient
	sendq  chan outCall
	cancel context.CancelFunc

	mu      sync.Mutex
	pending map[uint64]chan streamReply
	next    uint64
	err     error // why the stream ended; nil while it runs
}

// outCall is a call encoded by its caller (so a call that cannot be
// encoded fails alone, and callers encode in parallel), waiting for the
// writer.
type outCall struct {
	id  uint64
	msg *grpc.PreparedMsg
}

type streamReply struct {
	reply *pb.EnrichReply
	err   error
}

// openEnrichStream opens a stream that lives until it breaks or is
// cancelled; callCtx bounds only the opening (which waits while the
// connection is still connecting).
func openEnrichStream(callCtx context.Context, c pb.DetectorClient) (*enrichStream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(callCtx, cancel)
	st, err := c.EnrichStream(ctx)
	if !stop() {
		cancel()
		return nil, status.FromContextError(callCtx.Err()).Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	s := &enrichStream{st: st, sendq: make(chan outCall, streamQueue), cancel: cancel, pending: map[uint64]chan streamReply{}}
	go s.send()
	go s.recv()
	return s, nil
}

func (s *enrichStream) send() {
	for {
		select {
		case c := <-s.sendq:
			s.mu.Lock()
			_, live := s.pending[c.id]
			s.mu.Unlock()
			if !live {
				continue // its caller gave up: a detector resumed after a stop gets no burst of stale calls
			}
			if err := s.st.SendMsg(c.msg); err != nil {
				// io.EOF: the stream ended, and recv reports why.
				if !errors.Is(err, io.EOF) {
					s.fail(err)
				}
				return
			}
		case <-s.st.Context().Done():
			return
		}
	}
}

func (s *enrichStream) recv() {
	for {
		r, err := s.st.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		s.mu.Lock()
		ch := s.pending[r.Id]
		delete(s.pending, r.Id)
		s.mu.Unlock()
		if ch != nil { // nil: its caller gave up
			ch <- streamReply{reply: r}
		}
	}
}

// fail ends the stream: every waiting call gets err, and later calls find
// the stream broken (the DetectorClient opens a new one).
func (s *enrichStream) fail(err error) {
	if err == nil || errors.Is(err, io.EOF) {
		err = status.Error(codes.Unavailable, "detector closed its enrich stream")
	}
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	for id, ch := range s.pending {
		ch <- streamReply{err: s.err}
		delete(s.pending, id)
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *enrichStream) broken() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil
}

func (s *enrichStream) forget(id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// call makes one Enrich call on the stream. Errors are what a unary call
// returns in the same case (a gRPC status; DeadlineExceeded at ctx's
// deadline), so the Manager treats both alike.
func (s *enrichStream) call(ctx context.Context, req *pb.EnrichRequest) (*pb.EnrichResponse, error) {
	c := &pb.EnrichCall{Request: req}
	if dl, ok := ctx.Deadline(); ok {
		// Rounded up: the detector's deadline must not come before the
		// host's, or a detector that honours it answers DeadlineExceeded
		// first.
		c.TimeoutMs = max(1, (time.Until(dl) + time.Millisecond - 1).Milliseconds())
	}
	// The id is set below (under s.mu) and adds up to maxIDSize bytes: a
	// call sized without it could pass here and go out over the limit,
	// which would end the stream for every call on it.
	if n := proto.Size(c) + maxIDSize; n > maxStreamMsg {
		return nil, status.Errorf(codes.ResourceExhausted, "enrich call of %d bytes is over the %d-byte message limit", n, maxStreamMsg)
	}
	ch := make(chan streamReply, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	s.next++
	c.Id = s.next
	s.pending[c.Id] = ch
	s.mu.Unlock()
	msg := new(grpc.PreparedMsg)
	if err := msg.Encode(s.st, c); err != nil {
		s.forget(c.Id)
		return nil, err // a status (Internal), as a unary call's
	}
	select {
	case s.sendq <- outCall{c.Id, msg}:
	default:
		s.forget(c.Id)
		return nil, errStreamFull
	}
	select {
	case r := <-ch:
		switch {
		case r.err != nil:
			return nil, r.err
		case r.reply.Code != 0:
			return nil, status.Error(codes.Code(r.reply.Code), r.reply.Error)
		case r.reply.Response == nil:
			return &pb.EnrichResponse{}, nil
		}
		return r.reply.Response, nil
	case <-ctx.Done():
		s.forget(c.Id)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// enrichStream returns the client's stream, opening one when there is none
// or the last one broke. Callers that find another opening wait for it
// (bounded by that caller's deadline, and rare: after a detector restart).
func (d *DetectorClient) enrichStream(ctx context.Context) (*enrichStream, error) {
	d.smu.Lock()
	defer d.smu.Unlock()
	if d.stream != nil && !d.stream.broken() {
		return d.stream, nil
	}
	s, err := openEnrichStream(ctx, d.c)
	if err != nil {
		return nil, err
	}
	d.stream = s
	return s, nil
}

// EnrichStream serves Enrich calls on one stream (plugin side). Each call
// runs on a worker of its own, as unary calls do, so one slow or hung call
// holds up no other; a free worker takes the next call, and one idle for
// workerIdle ends.
func (s *detectorServer) EnrichStream(st pb.Detector_EnrichStreamServer) error {
	ctx := st.Context()
	// sendMu serializes replies; done, set when this handler returns,
	// stops workers still busy from using the stream after it.
	var sendMu sync.Mutex
	done := false
	defer func() {
		sendMu.Lock()
		done = true
		sendMu.Unlock()
	}()
	reply := func(r *pb.EnrichReply) {
		msg := new(grpc.PreparedMsg)
		var err error
		if n := proto.Size(r); n > maxStreamMsg {
			err = status.Errorf(codes.ResourceExhausted, "answer of %d bytes is over the %d-byte message limit", n, maxStreamMsg)
		} else {
			err = msg.Encode(st, r)
		}
		if err != nil { // this answer cannot go (invalid UTF-8, too large): its error goes instead
			stat := status.Convert(err)
			msg = new(grpc.PreparedMsg)
			if msg.Encode(st, &pb.EnrichReply{Id: r.Id, Code: uint32(stat.Code()), Error: stat.Message()}) != nil {
				return
			}
		}
		sendMu.Lock()
		defer sendMu.Unlock()
		if !done {
			st.SendMsg(msg) // fails only when the stream ended, which Recv reports
		}
	}
	handle := func(c *pb.EnrichCall) {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if c.TimeoutMs > 0 {
			cctx, cancel = context.WithTimeout(ctx, time.Duration(c.TimeoutMs)*time.Millisecond)
		}
		resp, err := s.Enrich(cctx, c.Request)
		cancel()
		r := &pb.EnrichReply{Id: c.Id, Response: resp}
		if err != nil {
			// As a unary handler's error: a status as it is, a context
			// error as its code (DeadlineExceeded: a timeout to the host,
			// not a failure), anything else Unknown.
			stat, ok := status.FromError(err)
			if !ok {
				stat = status.FromContextError(err)
			}
			r.Response, r.Code, r.Error = nil, uint32(stat.Code()), stat.Message()
			if r.Code == 0 {
				r.Code = uint32(codes.Unknown)
			}
		}
		reply(r)
	}
	work := make(chan *pb.EnrichCall)
	worker := func(c *pb.EnrichCall) {
		idle := time.NewTimer(workerIdle)
		defer idle.Stop()
		for {
			handle(c)
			idle.Reset(workerIdle)
			select {
			case c = <-work:
			case <-idle.C:
				return
			case <-ctx.Done():
				return
			}
		}
	}
	for {
		c, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the host closed its side
			}
			return err
		}
		select {
		case work <- c:
		default:
			go worker(c)
		}
	}
}
