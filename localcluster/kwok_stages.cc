#include "localcluster/kwok_stages.h"

namespace perimeter::localcluster {
namespace {

// Go durations as time.ParseDuration accepts them; anything else is rejected up front so a typo
// fails the pod visibly instead of leaving it Running.
constexpr const char* kDurationPattern = "^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$";

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// @COMPLETE@, @EXIT@ and @PATTERN@ are filled in below; {{ }} is KWOK's Go template syntax.
constexpr const char* kStages = R"yaml(apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: perimeter-pod-running
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      conditions:
      - type: PodScheduled
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      - type: Initialized
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      - type: ContainersReady
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      - type: Ready
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: perimeter-pod-complete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '(.metadata.annotations["@COMPLETE@"] // "") | test("@PATTERN@")'
      operator: 'In'
      values: ['true']
  delay:
    durationFrom:
      jq:
        expression: '.metadata.annotations["@COMPLETE@"]'
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $code := or ( index .metadata.annotations "@EXIT@" ) "0" }}
      phase: {{ if eq $code "0" }}Succeeded{{ else }}Failed{{ end }}
      conditions:
      - type: ContainersReady
        status: "False"
        reason: PodCompleted
        lastTransitionTime: {{ $now | Quote }}
      - type: Ready
        status: "False"
        reason: PodCompleted
        lastTransitionTime: {{ $now | Quote }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: {{ $code }}
            reason: {{ if eq $code "0" }}Completed{{ else }}Error{{ end }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: perimeter-pod-invalid-completion
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.metadata.annotations["@COMPLETE@"]'
      operator: 'Exists'
    - key: '(.metadata.annotations["@COMPLETE@"] // "") | test("@PATTERN@")'
      operator: 'In'
      values: ['false']
  next:
    statusTemplate: |
      phase: Failed
      reason: InvalidCompletionAnnotation
      message: {{ printf "annotation @COMPLETE@=%q is not a Go duration such as 5s or 250ms" ( index .metadata.annotations "@COMPLETE@" ) | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: perimeter-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    finalizers:
      empty: true
    delete: true
)yaml";

}  // namespace

std::string render_kwok_pod_stages() {
  std::string text = replace_all(kStages, "@COMPLETE@", kCompleteAfterAnnotation);
  text = replace_all(text, "@EXIT@", kExitCodeAnnotation);
  return replace_all(text, "@PATTERN@", kDurationPattern);
}

}  // namespace perimeter::localcluster
