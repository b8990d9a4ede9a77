"""Helpers shared by the test suites: cluster access, kubectl, object builders."""
