"""deploy/prometheus/alerts.yml: a rule file Prometheus loads, on metrics /metrics exports.

Each expression is parsed with promql-parser (a port of Prometheus' own PromQL parser),
and every metric, label and label value it selects is looked up in a real scrape of the
app on a real redis-server, so renaming a metric or a label breaks this test, not the
on-call engineer's pager.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Worker

from tests.conftest import PostCallback, load_example
from webhook.alerts import KINDS
from webhook.config import Settings
from webhook.errors import WebhookError
from webhook.store import now_ms
from webhook.store.alerts import AlertStore

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
# What Prometheus accepts in a rule file (rulefmt): more is an error at load time.
GROUP_KEYS = {"name", "interval", "limit", "query_offset", "labels", "rules"}
ALERT_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
# Prometheus' duration syntax (model.ParseDuration): units largest first, each at most once.
DURATION = re.compile(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
SEVERITIES = {"critical", "warning"}
# Labels Prometheus gives every scraped series (the target's): by() and without() may name
# them though /metrics never prints them.
TARGET_LABELS = {"job", "instance", "pod", "namespace"}
# A regex matcher the test can check value by value: literal alternatives only.
ALTERNATIVES = re.compile(r"[a-z0-9_]+(\|[a-z0-9_]+)*")


def webhook_errors(cls: type[WebhookError] = WebhookError) -> Iterator[type[WebhookError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from webhook_errors(sub)


# Label values the code defines but one scrape cannot all show: every refusal reason, every
# alert kind.
VOCABULARY = {
    "reason": {error.reason for error in webhook_errors()},
    "kind": set(KINDS),
}

Exported = dict[str, dict[str, set[str]]]


@cache
def rule_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return loaded


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_file()["groups"] for rule in group["rules"]]


def parsed(rule: dict[str, Any]) -> promql_parser.Expr:
    try:
        return promql_parser.parse(rule["expr"])
    except ValueError as err:
        pytest.fail(f"{rule['alert']}: {err}")


def test_the_file_is_groups_of_rules_with_only_keys_prometheus_knows():
    assert set(rule_file()) == {"groups"}
    names = [group["name"] for group in rule_file()["groups"]]
    assert len(names) == len(set(names)), "group names must be unique"
    for group in rule_file()["groups"]:
        assert set(group) <= GROUP_KEYS, group["name"]
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= ALERT_KEYS, rule
            assert {"alert", "expr"} <= set(rule), rule
            assert LABEL_NAME.fullmatch(rule["alert"]), rule["alert"]
            assert isinstance(rule["expr"], str), rule["alert"]


def test_alert_names_are_unique():
    names = [rule["alert"] for rule in alerting_rules()]

    assert sorted(names) == sorted(set(names))


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_an_alert_says_how_bad_what_is_wrong_and_where_to_read(rule: dict[str, Any]):
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    description = rule["annotations"]["description"]
    assert "README" in description or "docs/" in description


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_for_is_a_duration_prometheus_reads(rule: dict[str, Any]):
    span = rule["for"]

    assert isinstance(span, str)
    assert DURATION.fullmatch(span)
    assert promql_parser.parse_duration(span).total_seconds() > 0


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_the_expression_parses(rule: dict[str, Any]):
    assert parsed(rule) is not None


def test_a_syntax_error_fails_the_parse():
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum(rate(agora_callbacks_total[5m])")


# --- the metrics the rules select, against a real scrape -------------------------------


@pytest.fixture
def exported(
    client: FlaskClient,
    post_callback: PostCallback,
    redis: Redis,
    settings: Settings,
    run_jobs: Callable[[], int],
) -> Exported:
    """/metrics after the service has done a bit of everything, so that each family the
    rules use has samples with its labels: metric name -> label -> values seen."""
    failed_upload = load_example("31_")
    failed_upload["payload"]["details"]["status"] = 1
    post_callback(failed_upload)  # stored; its job raises upload_failed
    post_callback(load_example("40_"), secret="wrong")
    assert run_jobs() >= 1
    alerts = AlertStore(redis)
    for kind in ("nothing_recorded", "backup_not_uploaded"):  # a warning, a critical
        alerts.raise_alert(sid="s", cname="c", kind=kind, message="m", evidence={},
                           now_ms=now_ms())  # fmt: skip
    taken, _ = alerts.raise_alert(sid="t", cname="c", kind="download_failed", message="m",
                                  evidence={}, now_ms=now_ms())  # fmt: skip
    alerts.acknowledge(taken.id, now_ms=now_ms())
    # A live worker, so RQ's per-worker counts have samples.
    Worker([settings.queue_name], connection=redis).register_birth()  # type: ignore[no-untyped-call]  # unannotated upstream

    response = client.get("/metrics")
    assert response.status_code == 200
    exported: Exported = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            labels = exported.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return exported


def selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(
        expr,
        lambda node: found.append(node) if isinstance(node, promql_parser.VectorSelector) else None,
    )
    return found


def metric_name(selector: promql_parser.VectorSelector) -> str | None:
    if selector.name:
        return selector.name
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    return None


def selector_problems(selector: promql_parser.VectorSelector, exported: Exported) -> list[str]:
    name = metric_name(selector)
    if name is None:
        return [f"{selector}: select a metric by its exact name"]
    if name not in exported:
        return [f"{name} is not on /metrics"]
    labels = exported[name]
    problems = []
    for matcher in [
        *selector.matchers.matchers,
        *(m for o in selector.matchers.or_matchers for m in o),
    ]:
        if matcher.name == "__name__":
            continue
        if matcher.name not in labels:
            problems.append(f"{name} has no label {matcher.name!r} (it has {sorted(labels)})")
            continue
        known = labels[matcher.name] | VOCABULARY.get(matcher.name, set())
        if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual):
            wanted = {matcher.value}
        elif ALTERNATIVES.fullmatch(matcher.value):
            wanted = set(matcher.value.split("|"))
        else:
            problems.append(f"{name}{{{matcher.name}=~{matcher.value!r}}}: list values instead")
            continue
        problems.extend(
            f"{name}{{{matcher.name}}} is never {value!r} (known: {sorted(known)})"
            for value in sorted(wanted - known)
        )
    return problems


def grouping_problems(expr: promql_parser.Expr, exported: Exported) -> list[str]:
    """by(), without(), on() and ignoring() name labels the metrics below them have."""
    problems: list[str] = []

    def check(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            named = node.modifier.labels
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            named = node.modifier.matching.labels if node.modifier.matching else []
        else:
            return
        below = set(TARGET_LABELS)
        for selector in selectors(node):
            below.update(exported.get(metric_name(selector) or "", {}))
        problems.extend(f"{node}: no metric below has a label {label!r}"
                        for label in named if label not in below)  # fmt: skip

    promql_parser.walk(expr, check)
    return problems


def test_every_metric_label_and_value_a_rule_selects_is_exported(exported: Exported):
    problems = [
        f"{rule['alert']}: {problem}"
        for rule in alerting_rules()
        for problem in [
            *(p for s in selectors(parsed(rule)) for p in selector_problems(s, exported)),
            *grouping_problems(parsed(rule), exported),
        ]
    ]

    assert problems == []


def test_the_check_catches_a_renamed_metric_label_or_value(exported: Exported):
    def problems(expr: str) -> list[str]:
        parsed_expr = promql_parser.parse(expr)
        return [
            *(p for s in selectors(parsed_expr) for p in selector_problems(s, exported)),
            *grouping_problems(parsed_expr, exported),
        ]

    assert problems('rate(agora_callbacks_rejected_total{reason="store_unavailable"}[5m])') == []
    assert problems("agora_redis_down == 1")
    assert problems('rate(agora_callbacks_rejected_total{cause="store_unavailable"}[5m])')
    assert problems('rate(agora_callbacks_rejected_total{reason="store_down"}[5m])')
    assert problems('agora_open_alerts{severity="page"}')
    assert problems("sum without(workers) (agora_worker_jobs_total)")
