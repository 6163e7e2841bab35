"""ci-executor: the execution plane of the CI system."""
