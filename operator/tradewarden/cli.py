"""The ``tradewarden`` command: one entry point for every process the product runs.

``tradewarden operator`` runs the kopf operator, ``tradewarden runner --bot NS/NAME`` one bot,
``tradewarden emulator`` the local exchange emulator, ``tradewarden replay`` the replay gate (the same as
``python -m tradewarden.replay``). Each subcommand imports its layer lazily, so the
runner never loads kopf and the operator never loads ccxt.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["replay"]:
        # Handed over before parsing: argparse's REMAINDER would not pass on options such as --input.
        from tradewarden.replay.cli import main as replay_main

        return replay_main(argv[1:])
    parser = argparse.ArgumentParser(prog="tradewarden", description="Run trading bots on Kubernetes, safely.")
    sub = parser.add_subparsers(dest="command", required=True)

    op = sub.add_parser("operator", help="Run the operator (reconciles TradingBots, StrategyConfigs, KillSwitches).")
    op.add_argument("--namespace", action="append", default=[],
                    help="Watch only this namespace (repeatable). Default: all namespaces.")
    op.add_argument("--metrics-port", type=int, default=8080, help="Port of /metrics and /healthz (0: off).")
    op.add_argument("--runner-image", default=None, help="Default runner image for placement cluster.")
    op.add_argument("--reviewers", default=None, metavar="FILE",
                    help="YAML list of external (language-model) reviewers for the promotion gate's consensus: "
                         "name, url, model, timeoutSeconds, apiKeySecretRef {namespace, name, key}.")
    op.add_argument("--ledger-namespace", default=None,
                    help="The operator's own namespace: its gate ledger, its signing key and the verifying key "
                         "runners read (default: $TRADEWARDEN_LEDGER_NAMESPACE, $POD_NAMESPACE, "
                         "tradewarden-system). Bot authors must not be able to write there.")
    op.add_argument("--allowed-runner-image", action="append", default=[], metavar="PREFIX",
                    help="An image prefix a bot may name in spec.runner.image (repeatable); the repository of "
                         "the default runner image is always allowed.")
    op.add_argument("--allowed-api-url", action="append", default=[], metavar="PREFIX",
                    help="A venue URL prefix to which a bot with credentials may point spec.exchange.apiUrl "
                         "(repeatable; default: none, so credentials go only to the venue's own endpoints).")
    op.add_argument("--ensure-killswitch", default=None, metavar="NAME",
                    help="At start, create the cluster-scoped KillSwitch NAME with mode off if it does not exist "
                         "(an existing one is never changed or deleted). The chart passes it for its global "
                         "switch.")
    op.add_argument("--ensure-killswitch-reason", default=None, metavar="TEXT",
                    help="spec.reason of the KillSwitch that --ensure-killswitch creates.")
    op.add_argument("--verbose", action="store_true")
    op.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("TRADEWARDEN_LOG_FORMAT", "text"),
                    help="text (default, for a terminal) or json: one redacted JSON object per line, as the runner "
                         "writes (the chart sets json, for `kubectl logs` and log collectors).")

    rn = sub.add_parser("runner", help="Run one bot.")
    rn.add_argument("--bot", required=True, help="The TradingBot as NAMESPACE/NAME.")
    rn.add_argument("--journal", default=None, help="Journal folder (default: $TRADEWARDEN_JOURNAL or ./journal).")
    rn.add_argument("--metrics-port", type=int, default=9100, help="Port of /metrics and /healthz (0: off).")
    rn.add_argument("--kubeconfig", default=None, help="Kubeconfig (default: in-cluster, then $KUBECONFIG).")
    rn.add_argument("--tick-seconds", type=float, default=None, help="Override the polling interval.")
    rn.add_argument("--gate-key", default=None, metavar="NAMESPACE/NAME",
                    help="The ConfigMap with the operator's verifying key, in the operator's namespace (default: "
                         "$TRADEWARDEN_GATE_KEY, then tradewarden-system/tradewarden-gate-key). Live "
                         "permissions not signed by that key are refused.")

    em = sub.add_parser("emulator", help="Run the local exchange emulator.")
    em.add_argument("rest", nargs=argparse.REMAINDER)

    rp = sub.add_parser("replay", add_help=False,
                        help="Replay an EvidenceExport (stdin or --input FILE) and print the ReplayReport.")
    rp.add_argument("rest", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    if args.command == "operator":
        from tradewarden.controller.main import run_operator

        return run_operator(args)
    if args.command == "runner":
        from tradewarden.runner.main import run_runner

        return run_runner(args)
    if args.command == "replay":
        from tradewarden.replay.cli import main as replay_main

        return replay_main(args.rest)
    from tradewarden.emulator.__main__ import main as emulator_main

    return emulator_main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
