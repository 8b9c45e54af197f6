"""Checks template.yaml's time settings against AWS's guidance for Lambda with SQS, offline.

- The sync queue's VisibilityTimeout is at least six times the sync worker's timeout ("we
  recommend setting the source queue's visibility timeout to at least six times the timeout
  that you configure on your function", Lambda developer guide, "Using Lambda with Amazon SQS").
- The worker's SQS event source bounds its concurrency (ScalingConfig.MaximumConcurrency, which
  AWS accepts from 2 to 1000).
- The worker's timeout leaves its jobs time: at least the 2 s deadline margin plus one job's
  3 s minimum (shared/src/lambda.rs).
- The scheduled poll finishes within its period.

Usage: python check_timeouts.py template.yaml [--self-test]
"""
import re
import sys

import yaml


class CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node)}
    return {suffix: loader.construct_mapping(node)}


CfnLoader.add_multi_constructor("!", _tag)


def timeout(resources, name, default):
    return resources[name]["Properties"].get("Timeout", default)


def rate_seconds(expr):
    m = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", expr.strip())
    if not m:
        raise ValueError(f"unsupported schedule {expr!r}")
    n, unit = int(m.group(1)), m.group(2)
    return n * (60 if unit.startswith("minute") else 3600)


def check(doc):
    problems = []
    resources = doc["Resources"]
    default_timeout = doc.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    worker = timeout(resources, "SyncWorkerFunction", default_timeout)
    visibility = resources["SyncQueue"]["Properties"]["VisibilityTimeout"]
    if visibility < 6 * worker:
        problems.append(
            f"SyncQueue VisibilityTimeout {visibility} s is under 6 x the worker's timeout ({worker} s)"
        )
    if worker < 5:
        problems.append(f"the worker's timeout {worker} s leaves its jobs no time")
    event = resources["SyncWorkerFunction"]["Properties"]["Events"]["Jobs"]["Properties"]
    scaling = event.get("ScalingConfig", {}).get("MaximumConcurrency")
    if scaling is None:
        problems.append("the worker's SQS event source has no ScalingConfig.MaximumConcurrency")
    elif isinstance(scaling, dict) and "Ref" in scaling:
        param = doc["Parameters"][scaling["Ref"]]
        lo, hi = param.get("MinValue"), param.get("MaxValue")
        if lo is None or hi is None or lo < 2 or hi > 1000:
            problems.append(f"{scaling['Ref']} must be bounded within 2..1000")
    elif not 2 <= int(scaling) <= 1000:
        problems.append(f"MaximumConcurrency {scaling} is outside 2..1000")
    poll = timeout(resources, "PipedrivePollFunction", default_timeout)
    period = rate_seconds(doc["Parameters"]["PollSchedule"]["Default"])
    if poll >= period:
        problems.append(f"the poll's timeout {poll} s is not under its period {period} s")
    return problems


def main():
    path = sys.argv[1]
    with open(path) as f:
        doc = yaml.load(f, Loader=CfnLoader)
    problems = check(doc)
    if "--self-test" in sys.argv:
        # The check must catch a queue that redelivers a message still being worked on.
        doc["Resources"]["SyncQueue"]["Properties"]["VisibilityTimeout"] = 60
        del doc["Resources"]["SyncWorkerFunction"]["Properties"]["Events"]["Jobs"]["Properties"]["ScalingConfig"]
        caught = check(doc)
        if len(caught) != 2:
            print(f"self-test: expected 2 problems, found {caught}")
            sys.exit(1)
        print("self-test: a short visibility timeout and an unbounded worker are caught")
    for p in problems:
        print(f"timeouts: {p}")
    if problems:
        sys.exit(1)
    print("timeouts follow AWS's guidance")


if __name__ == "__main__":
    main()
