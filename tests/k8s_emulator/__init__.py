"""A Kubernetes API emulator for tests: the real REST API (batch/v1 Jobs, Pods, pod logs, Secrets)
over real HTTP, with a "kubelet" that runs each pod's container command as a local process group.

Run it as `python -m tests.k8s_emulator --port 0 --state-dir DIR`; from tests use
`tests.k8s_emulator.fixture.EmulatorProcess`. See README.md in this directory for the contract.
"""
