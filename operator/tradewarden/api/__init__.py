"""The API of tradewarden: custom resource models, conditions, the runner contract, market data types.

This package is the leaf of the import graph: it imports nothing else of tradewarden, so every other
layer may depend on it. The pydantic models here are the single source of truth for the CRDs.
"""
