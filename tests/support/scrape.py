"""Reading ``strongroom serve --metrics-bind`` as Prometheus does: over HTTP, parsed with prometheus_client's
own text parser (docs/metrics.md)."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Answer:
    status: int
    body: str


def get(url: str, token: str | None = None) -> Answer:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode())


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int, token: str | None = None) -> Samples:
    """Every family of the scrape by name: its samples' labels and values."""
    answer = get(f"http://127.0.0.1:{port}/metrics", token)
    assert answer.status == 200, answer
    found: Samples = {}
    for family in text_string_to_metric_families(answer.body):
        found.setdefault(family.name, [])
        for sample in family.samples:
            found[family.name].append((dict(sample.labels), sample.value))
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    matching = [v for found, v in samples[name] if all(found.get(k) == want for k, want in labels.items())]
    assert len(matching) == 1, (name, labels, samples[name])
    return matching[0]
