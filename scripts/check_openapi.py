#!/usr/bin/env python3
"""Validates openapi.yaml against the OpenAPI 3.1 specification (openapi-spec-validator).
That the spec lists exactly the routes the daemon serves is checked by the daemon's unit test
`http::tests::router_and_openapi_list_the_same_routes`."""
import sys

import yaml
from openapi_spec_validator import validate

path = sys.argv[1] if len(sys.argv) > 1 else "openapi.yaml"
with open(path) as f:
    spec = yaml.safe_load(f)
validate(spec)
ops = sum(1 for p in spec["paths"].values() for m in p if m in ("get", "post", "put", "patch", "delete"))
print(f"{path}: valid OpenAPI {spec['openapi']}, {len(spec['paths'])} paths, {ops} operations")
