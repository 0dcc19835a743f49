"""The embedded sandbox: stand-ins for a Kubernetes cluster and AWS, for tests and `panda-deploy demo`."""
