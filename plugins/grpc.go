package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vmlineage/vmlineage/agent/record"
	pb "github.com/vmlineage/vmlineage/plugins/proto"
)

// DetectorPlugin is the go-plugin glue. On the plugin side Impl is set; on
// the host side Lineage (served to the detector over the broker) and Config.
type DetectorPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl    Detector
	Lineage Lineage
	Config  map[string]string
	// UnaryEnrich: the host calls Enrich unary even when the detector
	// offers EnrichStream.
	UnaryEnrich bool
}

// GRPCServer registers the detector (plugin side).
func (p *DetectorPlugin) GRPCServer(broker *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterDetectorServer(s, &detectorServer{impl: p.Impl, broker: broker})
	return nil
}

// GRPCClient returns a *DetectorClient (host side).
func (p *DetectorPlugin) GRPCClient(_ context.Context, broker *goplugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &DetectorClient{c: pb.NewDetectorClient(c), broker: broker, lineage: p.Lineage, unary: p.UnaryEnrich}, nil
}

// Limits on what a detector may answer: more is cut and noted, so a
// detector gone mad cannot blow up an alert.
const (
	MaxSuspects = 1000
	MaxFindings = 1000
	maxText     = 4096
)

// ---- host side ----

// DetectorClient calls a detector process.
type DetectorClient struct {
	c       pb.DetectorClient
	broker  *goplugin.GRPCBroker
	lineage Lineage
	needs   Needs
	// streaming: Enrich calls go over EnrichStream (the detector offers
	// it and unary is false).
	streaming, unary bool
	smu              sync.Mutex
	stream           *enrichStream
}

// Transport is how Enrich calls reach the detector: "stream" or "unary".
func (d *DetectorClient) Transport() string {
	if d.streaming {
		return "stream"
	}
	return "unary"
}

// Needs is what the detector declared in Configure (AllNeeds when it
// declared nothing).
func (d *DetectorClient) Needs() Needs { return d.needs }

// Info asks the detector who it is.
func (d *DetectorClient) Info(ctx context.Context) (Info, error) {
	r, err := d.c.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, err
	}
	return Info{Name: r.Name, Version: r.Version, Description: r.Description}, nil
}

// Configure starts the lineage service on a broker stream and hands its id
// and the settings to the detector.
func (d *DetectorClient) Configure(ctx context.Context, cfg map[string]string) error {
	id := d.broker.NextId()
	lin := d.lineage
	go d.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := newGRPCServer(opts)
		pb.RegisterLineageServer(s, &lineageServer{impl: lin})
		return s
	})
	resp, err := d.c.Configure(ctx, &pb.ConfigureRequest{LineageBrokerId: id, Config: cfg})
	if err != nil {
		return err
	}
	d.needs = needsFromPB(resp.Needs)
	d.streaming = resp.EnrichStream && !d.unary
	return nil
}

func needsFromPB(n *pb.Needs) Needs {
	if n == nil || !n.Declared {
		return AllNeeds()
	}
	out := Needs{Enrich: n.Enrich, OnRecord: n.OnRecord, AlertFamily: n.AlertFamily, AlertRecords: n.AlertRecords, AlertAncestors: n.AlertAncestors}
	for _, a := range n.OnRecordActivities {
		out.OnRecordActivities = append(out.OnRecordActivities, record.Activity(a))
	}
	if w := n.EnrichWhen; w != nil {
		out.EnrichWhen = &EnrichWhen{Window: time.Duration(w.WindowMs) * time.Millisecond, MinFamilyAlerted: int(w.MinFamilyAlerted),
			DestroyedAncestor: w.DestroyedAncestor}
		for _, a := range w.RecordActivities {
			out.EnrichWhen.RecordActivities = append(out.EnrichWhen.RecordActivities, record.Activity(a))
		}
	}
	return out
}

func needsToPB(n Needs) *pb.Needs {
	out := &pb.Needs{Declared: true, Enrich: n.Enrich, OnRecord: n.OnRecord, AlertFamily: n.AlertFamily, AlertRecords: n.AlertRecords,
		AlertAncestors: n.AlertAncestors}
	for _, a := range n.OnRecordActivities {
		out.OnRecordActivities = append(out.OnRecordActivities, string(a))
	}
	if w := n.EnrichWhen; w != nil {
		out.EnrichWhen = &pb.EnrichWhen{WindowMs: w.Window.Milliseconds(), MinFamilyAlerted: int32(w.MinFamilyAlerted),
			DestroyedAncestor: w.DestroyedAncestor}
		for _, a := range w.RecordActivities {
			out.EnrichWhen.RecordActivities = append(out.EnrichWhen.RecordActivities, string(a))
		}
	}
	return out
}

// OnRecord passes a lifecycle record to the detector.
func (d *DetectorClient) OnRecord(ctx context.Context, r *record.Record) ([]Finding, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	resp, err := d.c.OnRecord(ctx, &pb.OnRecordRequest{RecordJson: js})
	if err != nil {
		return nil, err
	}
	return findingsFromPB(resp.Findings)
}

// Enrich asks the detector about an alert, sending only the parts of the
// context it declared it reads.
func (d *DetectorClient) Enrich(ctx context.Context, a *Alert) (*Enrichment, error) {
	req := &pb.EnrichRequest{Alert: &pb.Alert{Id: a.ID, TimeMs: ms(a.Time), EcsJson: a.ECS,
		Vms: make([]*pb.AlertVM, len(a.VMs))}}
	for i, v := range a.VMs {
		req.Alert.Vms[i] = &pb.AlertVM{VmUuid: v.UUID, MatchedField: v.Field, MatchedValue: v.Value}
	}
	family := d.needs.AlertFamily && len(a.Family) > 0
	if family {
		vms := make([]pb.VM, len(a.Family)) // one allocation for the lot
		req.Alert.Family = make([]*pb.VM, len(a.Family))
		for i := range a.Family {
			vmIntoPB(&vms[i], &a.Family[i])
			req.Alert.Family[i] = &vms[i]
		}
		sts := make([]pb.VMState, len(a.FamilyStates))
		req.Alert.FamilyStates = make([]*pb.VMState, len(a.FamilyStates))
		for i, st := range a.FamilyStates {
			sts[i].Uuid, sts[i].PowerState, sts[i].HostUuid, sts[i].Existed = st.UUID, st.PowerState, st.HostUUID, st.Existed
			req.Alert.FamilyStates[i] = &sts[i]
		}
	}
	if d.needs.AlertAncestors && len(a.Ancestors) > 0 {
		vms := make([]pb.VM, len(a.Ancestors))
		req.Alert.Ancestors = make([]*pb.VM, len(a.Ancestors))
		for i := range a.Ancestors {
			vmIntoPB(&vms[i], &a.Ancestors[i])
			req.Alert.Ancestors[i] = &vms[i]
		}
	}
	// The context window says what was sent: a detector that reads only
	// the family gets it with the family alerts, one that reads only
	// records with the records.
	if a.ContextWindow > 0 && (family || d.needs.AlertRecords) {
		req.Alert.ContextWindowMs = a.ContextWindow.Milliseconds()
		if d.needs.AlertRecords {
			for i := range a.Records {
				js, err := json.Marshal(&a.Records[i])
				if err != nil {
					return nil, err
				}
				req.Alert.RecordsJson = append(req.Alert.RecordsJson, js)
			}
		}
		if family {
			for _, x := range a.FamilyAlerted {
				req.Alert.FamilyAlerted = append(req.Alert.FamilyAlerted, &pb.AlertedVM{VmUuid: x.UUID, FirstMs: ms(x.First), LastMs: ms(x.Last), Count: x.Count})
			}
		}
	}
	var resp *pb.EnrichResponse
	var err error
	if d.streaming {
		var s *enrichStream
		if s, err = d.enrichStream(ctx); err == nil {
			resp, err = s.call(ctx, req)
		}
	} else {
		resp, err = d.c.Enrich(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	return enrichmentFromPB(resp)
}

// ErrGarbage marks an answer that breaks the protocol's rules.
var ErrGarbage = errors.New("invalid answer")

func enrichmentFromPB(r *pb.EnrichResponse) (*Enrichment, error) {
	e := &Enrichment{}
	if len(r.Suspects) > MaxSuspects {
		return nil, fmt.Errorf("%w: %d suspects (limit %d)", ErrGarbage, len(r.Suspects), MaxSuspects)
	}
	for i, s := range r.Suspects {
		if s.VmUuid == "" {
			return nil, fmt.Errorf("%w: suspect %d has no vm_uuid", ErrGarbage, i)
		}
		if math.IsNaN(s.Score) || s.Score < 0 || s.Score > 1 {
			return nil, fmt.Errorf("%w: suspect %s has score %v outside 0..1", ErrGarbage, s.VmUuid, s.Score)
		}
		e.Suspects = append(e.Suspects, Suspect{VMUUID: clip(s.VmUuid), VMName: clip(s.VmName), Score: s.Score,
			Reason: clip(s.Reason), PowerState: clip(s.PowerState), Destroyed: s.Destroyed})
	}
	fs, err := findingsFromPB(r.Findings)
	if err != nil {
		return nil, err
	}
	e.Findings = fs
	if r.CommonAncestor != nil && r.CommonAncestor.Uuid != "" {
		v := vmFromPB(r.CommonAncestor)
		e.CommonAncestor = &v
	}
	for _, n := range r.Notes {
		e.Notes = append(e.Notes, clip(n))
	}
	return e, nil
}

func findingsFromPB(in []*pb.Finding) ([]Finding, error) {
	if len(in) > MaxFindings {
		return nil, fmt.Errorf("%w: %d findings (limit %d)", ErrGarbage, len(in), MaxFindings)
	}
	var out []Finding
	for i, f := range in {
		if f.Kind == "" || f.Summary == "" {
			return nil, fmt.Errorf("%w: finding %d lacks kind or summary", ErrGarbage, i)
		}
		if f.Severity < 0 || f.Severity > 10 {
			return nil, fmt.Errorf("%w: finding %d has severity %d outside 0..10", ErrGarbage, i, f.Severity)
		}
		out = append(out, Finding{Kind: clip(f.Kind), VMUUID: clip(f.VmUuid), VMName: clip(f.VmName), Severity: int(f.Severity),
			Summary: clip(f.Summary), Time: fromMS(f.TimeMs), Details: f.Details, RecordID: clip(f.RecordId)})
	}
	return out, nil
}

func clip(s string) string {
	if len(s) > maxText {
		return s[:maxText]
	}
	return s
}

// lineageServer serves the host's Lineage to a detector.
type lineageServer struct {
	pb.UnimplementedLineageServer
	impl Lineage
}

func lineageErr(err error) error {
	if errors.Is(err, ErrNotFound) {
		return status.Error(codes.NotFound, err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (s *lineageServer) GetVM(ctx context.Context, r *pb.VMRequest) (*pb.VM, error) {
	v, err := s.impl.VM(ctx, r.Uuid)
	if err != nil {
		return nil, lineageErr(err)
	}
	return vmToPB(&v), nil
}

func (s *lineageServer) list(ctx context.Context, uuid string, f func(context.Context, string) ([]VM, error)) (*pb.VMList, error) {
	vms, err := f(ctx, uuid)
	if err != nil {
		return nil, lineageErr(err)
	}
	out := &pb.VMList{Vms: make([]*pb.VM, len(vms))}
	for i := range vms {
		out.Vms[i] = vmToPB(&vms[i])
	}
	return out, nil
}

func (s *lineageServer) Ancestors(ctx context.Context, r *pb.VMRequest) (*pb.VMList, error) {
	return s.list(ctx, r.Uuid, s.impl.Ancestors)
}

func (s *lineageServer) Descendants(ctx context.Context, r *pb.VMRequest) (*pb.VMList, error) {
	return s.list(ctx, r.Uuid, s.impl.Descendants)
}

func (s *lineageServer) Siblings(ctx context.Context, r *pb.VMRequest) (*pb.VMList, error) {
	return s.list(ctx, r.Uuid, s.impl.Siblings)
}

func (s *lineageServer) Family(ctx context.Context, r *pb.VMRequest) (*pb.VMList, error) {
	return s.list(ctx, r.Uuid, s.impl.Family)
}

func (s *lineageServer) StatesAt(ctx context.Context, r *pb.StatesAtRequest) (*pb.StatesAtResponse, error) {
	sts, err := s.impl.StatesAt(ctx, r.Uuids, fromMS(r.AtMs))
	if err != nil {
		return nil, lineageErr(err)
	}
	out := &pb.StatesAtResponse{}
	for _, st := range sts {
		out.States = append(out.States, &pb.VMState{Uuid: st.UUID, PowerState: st.PowerState, HostUuid: st.HostUUID, Existed: st.Existed})
	}
	return out, nil
}

func (s *lineageServer) Records(ctx context.Context, r *pb.RecordsRequest) (*pb.RecordsResponse, error) {
	recs, err := s.impl.Records(ctx, RecordQuery{VMUUID: r.VmUuid, Activity: record.Activity(r.Activity),
		Since: fromMS(r.SinceMs), Until: fromMS(r.UntilMs), Limit: int(r.Limit)})
	if err != nil {
		return nil, lineageErr(err)
	}
	out := &pb.RecordsResponse{}
	for i := range recs {
		js, err := json.Marshal(&recs[i])
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		out.RecordsJson = append(out.RecordsJson, js)
	}
	return out, nil
}

func (s *lineageServer) AlertedVMs(ctx context.Context, r *pb.AlertedVMsRequest) (*pb.AlertedVMsResponse, error) {
	avs, err := s.impl.AlertedVMs(ctx, r.Uuids, fromMS(r.SinceMs), fromMS(r.UntilMs))
	if err != nil {
		return nil, lineageErr(err)
	}
	out := &pb.AlertedVMsResponse{}
	for _, a := range avs {
		out.Vms = append(out.Vms, &pb.AlertedVM{VmUuid: a.UUID, FirstMs: ms(a.First), LastMs: ms(a.Last), Count: a.Count})
	}
	return out, nil
}

// ---- plugin side ----

type detectorServer struct {
	pb.UnimplementedDetectorServer
	impl   Detector
	broker *goplugin.GRPCBroker
}

func (s *detectorServer) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	i := s.impl.Info()
	return &pb.InfoResponse{Name: i.Name, Version: i.Version, Description: i.Description}, nil
}

func (s *detectorServer) Configure(ctx context.Context, r *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	conn, err := s.broker.DialWithOptions(r.LineageBrokerId, dialOptions...)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "dial lineage service: %v", err)
	}
	if err := s.impl.Configure(ctx, r.Config, &lineageClient{c: pb.NewLineageClient(conn)}); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	out := &pb.ConfigureResponse{EnrichStream: true}
	if nd, ok := s.impl.(NeedsDeclarer); ok {
		out.Needs = needsToPB(nd.Needs())
	}
	return out, nil
}

func (s *detectorServer) OnRecord(ctx context.Context, r *pb.OnRecordRequest) (*pb.OnRecordResponse, error) {
	var rec record.Record
	if err := json.Unmarshal(r.RecordJson, &rec); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "record: %v", err)
	}
	fs, err := s.impl.OnRecord(ctx, &rec)
	if err != nil {
		return nil, err
	}
	return &pb.OnRecordResponse{Findings: findingsToPB(fs)}, nil
}

func (s *detectorServer) Enrich(ctx context.Context, r *pb.EnrichRequest) (*pb.EnrichResponse, error) {
	if r.Alert == nil {
		return nil, status.Error(codes.InvalidArgument, "no alert")
	}
	a := &Alert{ID: r.Alert.Id, Time: fromMS(r.Alert.TimeMs), ECS: r.Alert.EcsJson}
	for _, v := range r.Alert.Vms {
		a.VMs = append(a.VMs, AlertVM{UUID: v.VmUuid, Field: v.MatchedField, Value: v.MatchedValue})
	}
	for _, v := range r.Alert.Family {
		a.Family = append(a.Family, vmFromPB(v))
	}
	for _, s := range r.Alert.FamilyStates {
		a.FamilyStates = append(a.FamilyStates, VMState{UUID: s.Uuid, PowerState: s.PowerState, HostUUID: s.HostUuid, Existed: s.Existed})
	}
	for _, v := range r.Alert.Ancestors {
		a.Ancestors = append(a.Ancestors, vmFromPB(v))
	}
	if r.Alert.ContextWindowMs > 0 {
		a.ContextWindow = time.Duration(r.Alert.ContextWindowMs) * time.Millisecond
		a.Records = make([]record.Record, len(r.Alert.RecordsJson))
		for i, js := range r.Alert.RecordsJson {
			if err := json.Unmarshal(js, &a.Records[i]); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "alert record %d: %v", i, err)
			}
		}
		for _, x := range r.Alert.FamilyAlerted {
			a.FamilyAlerted = append(a.FamilyAlerted, AlertedVM{UUID: x.VmUuid, First: fromMS(x.FirstMs), Last: fromMS(x.LastMs), Count: x.Count})
		}
	}
	e, err := s.impl.Enrich(ctx, a)
	if err != nil {
		return nil, err
	}
	out := &pb.EnrichResponse{}
	if e == nil {
		return out, nil
	}
	for _, s := range e.Suspects {
		out.Suspects = append(out.Suspects, &pb.Suspect{VmUuid: s.VMUUID, VmName: s.VMName, Score: s.Score, Reason: s.Reason,
			PowerState: s.PowerState, Destroyed: s.Destroyed})
	}
	out.Findings = findingsToPB(e.Findings)
	if e.CommonAncestor != nil {
		out.CommonAncestor = vmToPB(e.CommonAncestor)
	}
	out.Notes = e.Notes
	return out, nil
}

func findingsToPB(fs []Finding) []*pb.Finding {
	var out []*pb.Finding
	for _, f := range fs {
		out = append(out, &pb.Finding{Kind: f.Kind, VmUuid: f.VMUUID, VmName: f.VMName, Severity: int32(f.Severity),
			Summary: f.Summary, TimeMs: ms(f.Time), Details: f.Details, RecordId: f.RecordID})
	}
	return out
}

// lineageClient is the detector's Lineage: calls to the host over the broker.
type lineageClient struct{ c pb.LineageClient }

func clientErr(err error) error {
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("%s: %w", status.Convert(err).Message(), ErrNotFound)
	}
	return err
}

func (l *lineageClient) VM(ctx context.Context, uuid string) (VM, error) {
	v, err := l.c.GetVM(ctx, &pb.VMRequest{Uuid: uuid})
	if err != nil {
		return VM{}, clientErr(err)
	}
	return vmFromPB(v), nil
}

func vmsFromPB(l *pb.VMList, err error) ([]VM, error) {
	if err != nil {
		return nil, clientErr(err)
	}
	out := make([]VM, len(l.Vms))
	for i, v := range l.Vms {
		out[i] = vmFromPB(v)
	}
	return out, nil
}

func (l *lineageClient) Ancestors(ctx context.Context, uuid string) ([]VM, error) {
	return vmsFromPB(l.c.Ancestors(ctx, &pb.VMRequest{Uuid: uuid}))
}

func (l *lineageClient) Descendants(ctx context.Context, uuid string) ([]VM, error) {
	return vmsFromPB(l.c.Descendants(ctx, &pb.VMRequest{Uuid: uuid}))
}

func (l *lineageClient) Siblings(ctx context.Context, uuid string) ([]VM, error) {
	return vmsFromPB(l.c.Siblings(ctx, &pb.VMRequest{Uuid: uuid}))
}

func (l *lineageClient) Family(ctx context.Context, uuid string) ([]VM, error) {
	return vmsFromPB(l.c.Family(ctx, &pb.VMRequest{Uuid: uuid}))
}

func (l *lineageClient) StatesAt(ctx context.Context, uuids []string, at time.Time) ([]VMState, error) {
	r, err := l.c.StatesAt(ctx, &pb.StatesAtRequest{Uuids: uuids, AtMs: ms(at)})
	if err != nil {
		return nil, clientErr(err)
	}
	out := make([]VMState, len(r.States))
	for i, s := range r.States {
		out[i] = VMState{UUID: s.Uuid, PowerState: s.PowerState, HostUUID: s.HostUuid, Existed: s.Existed}
	}
	return out, nil
}

func (l *lineageClient) Records(ctx context.Context, q RecordQuery) ([]record.Record, error) {
	r, err := l.c.Records(ctx, &pb.RecordsRequest{VmUuid: q.VMUUID, Activity: string(q.Activity), SinceMs: ms(q.Since),
		UntilMs: ms(q.Until), Limit: int32(q.Limit)})
	if err != nil {
		return nil, clientErr(err)
	}
	out := make([]record.Record, len(r.RecordsJson))
	for i, js := range r.RecordsJson {
		if err := json.Unmarshal(js, &out[i]); err != nil {
			return nil, fmt.Errorf("record %d from host: %w", i, err)
		}
	}
	return out, nil
}

func (l *lineageClient) AlertedVMs(ctx context.Context, uuids []string, since, until time.Time) ([]AlertedVM, error) {
	r, err := l.c.AlertedVMs(ctx, &pb.AlertedVMsRequest{Uuids: uuids, SinceMs: ms(since), UntilMs: ms(until)})
	if err != nil {
		return nil, clientErr(err)
	}
	out := make([]AlertedVM, len(r.Vms))
	for i, a := range r.Vms {
		out[i] = AlertedVM{UUID: a.VmUuid, First: fromMS(a.FirstMs), Last: fromMS(a.LastMs), Count: a.Count}
	}
	return out, nil
}

func vmToPB(v *VM) *pb.VM {
	out := &pb.VM{}
	vmIntoPB(out, v)
	return out
}

func vmIntoPB(out *pb.VM, v *VM) {
	out.Uuid, out.PoolUuid, out.Name, out.ParentUuid, out.ParentVia = v.UUID, v.PoolUUID, v.Name, v.ParentUUID, v.ParentVia
	out.Kind, out.PowerState, out.HostUuid = v.Kind, v.PowerState, v.HostUUID
	out.FirstSeenMs, out.LastSeenMs, out.DestroyedMs = ms(v.FirstSeen), ms(v.LastSeen), ms(v.Destroyed)
}

func vmFromPB(v *pb.VM) VM {
	return VM{UUID: v.Uuid, PoolUUID: v.PoolUuid, Name: v.Name, ParentUUID: v.ParentUuid, ParentVia: v.ParentVia,
		Kind: v.Kind, PowerState: v.PowerState, HostUUID: v.HostUuid, FirstSeen: fromMS(v.FirstSeenMs),
		LastSeen: fromMS(v.LastSeenMs), Destroyed: fromMS(v.DestroyedMs)}
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
