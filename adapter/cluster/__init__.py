"""Cluster mode: Triton pods, each with the adapter as a sidecar, on Kubernetes.

    lease.py       one leader among the sidecars (coordination.k8s.io/v1 Lease)
    plan_store.py  the published plan: ConfigMap `<pipeline>-plan` (plan.json + generation)
    scaler.py      the Deployment's replicas through the scale subresource
    kube.py        API client loading, retry classification, bounded retries
    node.py        the wiring: leader loop (plan -> publish + scale), follower loop (published
                   plan -> local Triton), readiness and metrics over HTTP

Every Kubernetes call is retried on conflicts (409), throttling (429), server errors (5xx) and
connection failures; none of them ends the process.
"""
