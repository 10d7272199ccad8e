"""The definition documents of §5 as typed models: schemas, workflows, providers.

These models check the shape of one document at a time. Whatever needs more
than one document (does the schema exist, do references point at earlier
steps) is checked when a catalog is built from them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

Kind = Literal["schema", "workflow", "provider"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

# Ids travel in URLs, NATS subjects (percent-encoded) and MongoDB keys.
Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")]
ServiceName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w\-]*$")]
VariableName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][\w\-]*$")]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _version_text(value: Any) -> Any:
    # `version: 1.0` in YAML is a float; the author meant the text "1.0".
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Method = Annotated[HttpMethod, BeforeValidator(_upper)]
Endpoint = Annotated[str, AfterValidator(lambda value: check_endpoint(value))]


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RetryPolicy(_Document):
    max_attempts: int = Field(1, ge=1, le=100)
    backoff_ms: int = Field(1000, ge=0, le=3_600_000)


class Compensation(_Document):
    service: ServiceName
    endpoint: Endpoint
    method: Method = "POST"
    input_map: dict[str, Any] = Field(default_factory=dict)


class Step(_Document):
    id: Id
    name: str | None = None
    type: Literal["api_call"] = "api_call"
    service: ServiceName
    endpoint: Endpoint
    method: Method = "POST"
    input_map: dict[str, Any] = Field(default_factory=dict)
    output_map: Any = None
    condition: str | None = None
    variables: list[VariableName] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: float = Field(30, gt=0, le=3600)
    on_failure: Literal["fail", "continue"] = "fail"
    compensation: Compensation | None = None


class Workflow(_Document):
    id: Id
    provider_id: Id
    name: str = Field(min_length=1)
    description: str = ""
    input_schema_id: Id | None = None
    output_schema_id: Id | None = None
    active: bool = True
    output_map: Any = None
    steps: list[Step] = Field(min_length=1, max_length=200)


class SchemaDocument(_Document):
    id: Id
    provider_id: Id
    name: str = Field(min_length=1)
    version: Annotated[str, BeforeValidator(_version_text)] = "1"
    type: Literal["input", "output"]
    description: str = ""
    definition: dict[str, Any] | bool


class ConditionDocument(_Document):
    field: str
    operator: str
    value: Any = None


class TriggerDocument(_Document):
    event: Literal["onCreate", "onUpdate"]
    conditions: list[ConditionDocument] = Field(default_factory=list)


class BindingDocument(_Document):
    workflow_id: Id
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    input: dict[str, Any] = Field(default_factory=dict)
    triggers: list[TriggerDocument] = Field(default_factory=list)


class ProviderInfo(_Document):
    id: Id
    name: str = Field(min_length=1)
    type: str = "processor"


class ProviderDocument(_Document):
    provider: ProviderInfo
    workflows: list[BindingDocument] = Field(default_factory=list)


MODELS: dict[Kind, type[_Document]] = {
    "schema": SchemaDocument,
    "workflow": Workflow,
    "provider": ProviderDocument,
}


def check_endpoint(endpoint: str) -> str:
    """An endpoint is a path starting with `/` whose `{name}` placeholders are names."""
    if not endpoint.startswith("/"):
        raise ValueError("must be a path starting with '/'")
    if "://" in endpoint or endpoint.startswith("//"):
        raise ValueError("must be a path on the configured service, not a URL")
    for match in _PLACEHOLDER.finditer(endpoint):
        if not _PLACEHOLDER_NAME.match(match.group(1)):
            raise ValueError(f"placeholder {match.group(0)!r} must be a simple name")
    if _PLACEHOLDER.sub("", endpoint).count("{") or _PLACEHOLDER.sub("", endpoint).count("}"):
        raise ValueError("unbalanced '{' or '}'")
    return endpoint


def endpoint_placeholders(endpoint: str) -> list[str]:
    """The placeholder names of an endpoint, in order."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(endpoint)]
