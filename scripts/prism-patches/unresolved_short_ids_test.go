package jobservices

import (
	"testing"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
)

// Two bundles report a counter under a short ID whose metadata has not arrived yet: both values
// count once it does (kappaflow: Prism lost a whole bundle's counter update here).
func TestUnresolvedShortIDKeepsEveryBundle(t *testing.T) {
	ms := metricsStore{}
	for _, v := range []byte{3, 4} {
		unknown := ms.ContributeFinalMetrics(&fnpb.ProcessBundleResponse{MonitoringData: map[string][]byte{"c": {v}}})
		if len(unknown) != 1 {
			t.Fatalf("short ID c should be unknown, got %v", unknown)
		}
	}
	ms.AddShortIDs(&fnpb.MonitoringInfosMetadataResponse{
		MonitoringInfo: map[string]*pipepb.MonitoringInfo{"c": makeInfo(pipepb.MonitoringInfoSpecs_USER_SUM_INT64)},
	})
	got := ms.Results(committed)
	if len(got) != 1 || len(got[0].GetPayload()) != 1 || got[0].GetPayload()[0] != 7 {
		t.Fatalf("want one counter of 7 (3 + 4), got %v", got)
	}
}
