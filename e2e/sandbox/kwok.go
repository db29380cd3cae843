package sandbox

// kwokStages is the whole lifecycle kwok plays. A config with any Stage
// replaces kwok's defaults, so everything the sandbox relies on is here:
//   - node-ready: nodes the sandbox creates become Ready (their allocatable,
//     addresses and podCIDR are set at creation and left alone);
//   - pod-ready: scheduled pods become Running and Ready with an IP from the
//     node's podCIDR, so StatefulSet rollouts progress as on a real cluster;
//   - pod-delete: a pod being deleted goes away at once, as if its kubelet
//     had confirmed the termination (no containers to stop).
//
// Node heartbeats come from kwok's node leases (--node-lease-duration-seconds),
// which keeps the node-lifecycle controller from marking nodes unreachable.
const kwokStages = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: rebind-node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now | Quote }}
      {{ $since := or .metadata.creationTimestamp Now | Quote }}
      conditions:
      {{ range $type := list "MemoryPressure" "DiskPressure" "PIDPressure" }}
      - type: {{ $type }}
        status: "False"
        reason: KwokNoPressure
        message: the sandbox node has no real resources to exhaust
        lastHeartbeatTime: {{ $now }}
        lastTransitionTime: {{ $since }}
      {{ end }}
      - type: Ready
        status: "True"
        reason: KwokReady
        message: kwok plays this node's kubelet
        lastHeartbeatTime: {{ $now }}
        lastTransitionTime: {{ $now }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
        kernelVersion: {{ printf "kwok-%s" Version | Quote }}
        machineID: ""
        systemUUID: ""
        bootID: ""
        osImage: ""
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: rebind-pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
  next:
    statusTemplate: |
      {{ $now := Now | Quote }}
      conditions:
      {{ range $type := list "PodReadyToStartContainers" "Initialized" "ContainersReady" "Ready" }}
      - type: {{ $type }}
        status: "True"
        lastTransitionTime: {{ $now }}
      {{ end }}
      {{ range .spec.readinessGates }}
      - type: {{ .conditionType | Quote }}
        status: "True"
        lastTransitionTime: {{ $now }}
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
            startedAt: {{ $now }}
            finishedAt: {{ $now }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now }}
      {{ end }}
      {{ with NodeIPWith .spec.nodeName }}
      hostIP: {{ . | Quote }}
      hostIPs:
      - ip: {{ . | Quote }}
      {{ end }}
      {{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ . | Quote }}
      podIPs:
      - ip: {{ . | Quote }}
      {{ end }}
      phase: Running
      startTime: {{ $now }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: rebind-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
  next:
    delete: true
`
