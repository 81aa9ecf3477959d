"""The smallest Dagster code location: one asset, loaded by `dagster api grpc -f` and
`dagster code-server start -f` in the gRPC health tests."""

import dagster as dg


@dg.asset
def hello() -> str:
    return "hello"


defs = dg.Definitions(assets=[hello])
