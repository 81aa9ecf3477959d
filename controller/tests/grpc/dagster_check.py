"""Dagster's own verdict on gRPC servers: `dagster api grpc-health-check -h 127.0.0.1 -p
PORT`, the very command, run for each port in this one process (Dagster imports in
seconds; the command itself takes milliseconds).

    python dagster_check.py PORT...

Prints one JSON line per port: {"port": PORT, "exit": EXIT_CODE, "output": "..."}.
"""

import json
import sys

from click.testing import CliRunner
from dagster._cli import cli


def main() -> None:
    runner = CliRunner()
    for port in sys.argv[1:]:
        result = runner.invoke(cli, ["api", "grpc-health-check", "-h", "127.0.0.1", "-p", port])
        print(json.dumps({"port": int(port), "exit": result.exit_code, "output": result.output}))


if __name__ == "__main__":
    main()
