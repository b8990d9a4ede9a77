"""The external reviewers configured for the operator: the ``--reviewers`` file and its entries.

Loaded once by :mod:`tradewarden.controller.main` when the operator starts (a file that does not parse
stops the operator with a message naming the entry and the field), and used by
:mod:`tradewarden.controller.promotion`, which reads each entry's API key Secret when a consensus round
runs. The file is YAML, a list of::

    - name: gpt-risk                      # the reviewer's name in votes (a second entry of the same
      url: https://api.openai.com/v1      #   name is asked too, but only the first vote counts)
      model: gpt-4o-mini
      timeoutSeconds: 30                  # an answer later than this counts against
      apiKeySecretRef: {namespace: tradewarden-system, name: openai-key, key: apiKey}

The chart renders it from ``values.reviewers`` into a ConfigMap mounted at
``/etc/tradewarden/reviewers.yaml`` and grants the operator ``get`` on exactly those Secrets: the only
Secrets the operator ever reads (DESIGN.md invariant 5: keys go into an Authorization header and nowhere
else — not a log line, a status, an Event or a metric).
"""

from __future__ import annotations

import pathlib

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from tradewarden.api.base import WireModel
from tradewarden.consensus import ExternalReviewer


class ApiKeySecretRef(WireModel):
    """Where a reviewer's API key is: one key of one Secret (in the operator's namespace, with the chart)."""

    namespace: str = Field(min_length=1, max_length=63, description="Namespace of the Secret.")
    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(default="apiKey", min_length=1, max_length=253, description="Key in the Secret.")


class ReviewerConfig(WireModel):
    """One external reviewer: a language model behind the OpenAI-compatible chat completions API."""

    name: str = Field(min_length=1, max_length=128, description="Reviewer name, as it appears in votes.")
    url: str = Field(min_length=1, max_length=512, description="Base URL, e.g. https://api.openai.com/v1.")
    model: str = Field(min_length=1, max_length=128, description="Model name sent with each request.")
    timeout_seconds: float = Field(default=30.0, gt=0.0, le=600.0,
                                   description="Seconds to wait for an answer; a later one counts against.")
    api_key_secret_ref: ApiKeySecretRef | None = Field(
        default=None, description="The API key's Secret; none for an endpoint that needs no key.")


_LIST = TypeAdapter(list[ReviewerConfig])


class ReviewersFileError(ValueError):
    """The reviewers file cannot be used; the message names the file, the entry and the field."""


def parse_reviewers(text: str, source: str = "reviewers file") -> list[ReviewerConfig]:
    """The reviewer entries of a YAML document (empty: none)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ReviewersFileError(f"{source}: not valid YAML ({exc})") from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise ReviewersFileError(f"{source}: must be a list of reviewers (got {type(doc).__name__})")
    try:
        configs = _LIST.validate_python(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:10]:
            loc = err["loc"]
            where = f"[{loc[0]}]" + "".join(f".{part}" for part in loc[1:])
            problems.append(f"{where}: {err['msg']}")
        raise ReviewersFileError(f"{source}: " + "; ".join(problems)) from None
    for i, config in enumerate(configs):
        try:
            # The same checks a consensus round makes, now rather than at the first promotion.
            ExternalReviewer(config.name, config.url, config.model, "", config.timeout_seconds)
        except ValueError as exc:
            raise ReviewersFileError(f"{source}: [{i}] ({config.name}): {exc}") from None
    return configs


def load_reviewers(path: str | pathlib.Path) -> list[ReviewerConfig]:
    """Read and check the ``--reviewers`` file."""
    try:
        text = pathlib.Path(path).read_text()
    except OSError as exc:
        raise ReviewersFileError(f"--reviewers {path}: cannot read it ({exc.strerror or exc})") from None
    return parse_reviewers(text, f"--reviewers {path}")
