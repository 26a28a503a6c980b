#pragma once

#include <string>

namespace perimeter::localcluster {

// KWOK plays the kubelet for fake Nodes. Our pod lifecycle, chosen so tests can say when a pod's
// container "exits" without a kubelet:
//   - a pod bound to a fake node goes Running at once (conditions Ready, a pod IP, containers
//     running);
//   - a Running pod annotated `perimeter.dev/kwok-complete-after: <Go duration>` (5s, 250ms, 1m)
//     finishes that long after it went Running: Succeeded with exit code 0, or Failed when it is
//     also annotated `perimeter.dev/kwok-exit-code: "<n>"` with n != 0;
//   - a Running pod whose complete-after value is not a Go duration goes Failed at once with reason
//     InvalidCompletionAnnotation and a message naming the annotation, instead of running forever;
//   - a pod being deleted has its finalizers cleared and is removed (no kubelet to confirm it).
// Pods without the annotation run until deleted. activeDeadlineSeconds is not enforced (that is
// the kubelet's job and there is none).
inline constexpr const char* kCompleteAfterAnnotation = "perimeter.dev/kwok-complete-after";
inline constexpr const char* kExitCodeAnnotation = "perimeter.dev/kwok-exit-code";
// Nodes carrying this annotation are the ones KWOK manages.
inline constexpr const char* kFakeNodeAnnotation = "kwok.x-k8s.io/node";
inline constexpr const char* kFakeNodeAnnotationValue = "fake";

// The KWOK configuration (multi-document YAML of Stage objects) for the pod lifecycle above.
// Node stages are KWOK's defaults (Ready at once, heartbeats through node Leases).
std::string render_kwok_pod_stages();

}  // namespace perimeter::localcluster
