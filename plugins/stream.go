package plugins

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// errStreamFull is returned when a detector has streamQueue calls waiting
// to be written.
var errStreamFull = status.Error(codes.ResourceExhausted, "detector is not reading its calls")

// enrichStream is the host's end of one EnrichStream. Calls are written
// by one goroutine (a write can block on flow control when the detector
// stops reading, and no call may wait on that beyond its deadline) and
// answered by another, which hands each reply to its caller by id.
type enrichStream struct {
	sendq  chan *pb.EnrichCall
	cancel context.CancelFunc

	mu      sync.Mutex
	pending map[uint64]chan streamReply
	next    uint64
	err     error // why the stream ended; nil while it runs
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
	s := &enrichStream{sendq: make(chan *pb.EnrichCall, streamQueue), cancel: cancel, pending: map[uint64]chan streamReply{}}
	go s.send(st)
	go s.recv(st)
	return s, nil
}

func (s *enrichStream) send(st pb.Detector_EnrichStreamClient) {
	for {
		select {
		case c := <-s.sendq:
			if err := st.Send(c); err != nil {
				// Send reports io.EOF when the stream ended; Recv has
				// the reason.
				if errors.Is(err, io.EOF) {
					_, err = st.Recv()
				}
				s.fail(err)
				return
			}
		case <-st.Context().Done():
			return
		}
	}
}

func (s *enrichStream) recv(st pb.Detector_EnrichStreamClient) {
	for {
		r, err := st.Recv()
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
		c.TimeoutMs = max(1, time.Until(dl).Milliseconds())
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
	select {
	case s.sendq <- c:
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
// or the last one broke.
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
// holds up no other; workers stay for the stream's life and take the next
// call when free.
func (s *detectorServer) EnrichStream(st pb.Detector_EnrichStreamServer) error {
	ctx := st.Context()
	var sendMu sync.Mutex
	work := make(chan *pb.EnrichCall)
	handle := func(c *pb.EnrichCall) {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if c.TimeoutMs > 0 {
			cctx, cancel = context.WithTimeout(ctx, time.Duration(c.TimeoutMs)*time.Millisecond)
		}
		resp, err := s.Enrich(cctx, c.Request)
		cancel()
		r := &pb.EnrichReply{Id: c.Id, Response: resp}
		if err != nil {
			stat := status.Convert(err)
			r.Response, r.Code, r.Error = nil, uint32(stat.Code()), stat.Message()
			if r.Code == 0 {
				r.Code = uint32(codes.Unknown)
			}
		}
		sendMu.Lock()
		st.Send(r) // fails only when the stream ended, which Recv reports
		sendMu.Unlock()
	}
	worker := func(c *pb.EnrichCall) {
		for {
			handle(c)
			select {
			case c = <-work:
			case <-ctx.Done():
				return
			}
		}
	}
	for {
		c, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
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
