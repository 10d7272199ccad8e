"""A catalog: a consistent set of schemas, workflows and providers, ready to run.

Building one validates every document, compiles every workflow and trigger,
checks the references between documents and reports every problem at once.
Each item gets a content hash so registration can tell "same" from "changed".

Documents registered earlier, perhaps by a version with looser rules, are
loaded leniently: a trigger or a schema pattern this version refuses to run
disables what holds it, with the reason, so the registered state always loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from blobflow.core.compiler import CompiledWorkflow, compile_workflow
from blobflow.core.definitions import (
    BindingDocument,
    Kind,
    ProviderDocument,
    SchemaDocument,
    Workflow,
)
from blobflow.core.jsonschemas import SchemaValidator, schema_problems
from blobflow.core.jsonvalues import MISSING
from blobflow.core.sources import SourceDocument
from blobflow.core.triggers import Binding, EventKind, Trigger, compile_condition, match_bindings
from blobflow.core.validation import source_problem, validate_document
from blobflow.errors import (
    DefinitionError,
    PathPart,
    Problem,
    TriggerError,
    did_you_mean,
    format_path,
)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class DisabledBinding:
    """A registered binding that no event starts: this version refuses its triggers."""

    provider_id: str
    workflow_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DisabledSchema:
    """A registered schema this version refuses to run; every instance fails it."""

    schema_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Catalog:
    schemas: Mapping[str, SchemaDocument]
    workflows: Mapping[str, CompiledWorkflow]
    providers: Mapping[str, ProviderDocument]
    bindings: tuple[Binding, ...]
    hashes: Mapping[tuple[Kind, str], str]
    validators: Mapping[str, SchemaValidator]
    active: frozenset[str] = field(default=frozenset())
    # Registered versions; a catalog read from files has version 1 throughout.
    versions: Mapping[tuple[Kind, str], int] = field(default_factory=dict)
    # What registered documents hold that this version will not run (`build_catalog`).
    disabled_bindings: tuple[DisabledBinding, ...] = ()
    disabled_schemas: tuple[DisabledSchema, ...] = ()

    def version(self, kind: Kind, item_id: str) -> int:
        return self.versions.get((kind, item_id), 1)

    def match(self, event: Mapping[str, Any], kind: EventKind) -> list[Binding]:
        """The bindings `event` triggers, in execution order."""
        return match_bindings(event, kind, self.bindings, self.active)


def content_hash(model: BaseModel) -> str:
    """A hash of the normalised content: defaults spelled out or left out hash alike."""
    data = model.model_dump(mode="json")
    try:
        canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def build_catalog(
    documents: Iterable[SourceDocument],
    versions: Mapping[tuple[Kind, str], int] | None = None,
    *,
    registered: Iterable[SourceDocument] = (),
) -> Catalog:
    """Validate and compile `documents` as one set; DefinitionError lists every problem.

    `registered` documents, accepted earlier, join the set leniently: a binding
    whose triggers no longer compile, or that runs a workflow using a disabled
    schema, gets no triggers; a schema whose patterns the linear engine refuses
    fails every instance. Each is listed in the catalog with the reason. A new
    document referring to a disabled schema is a problem.
    """
    builder = _Builder()
    for document in registered:
        builder.add(document, lenient=True)
    for document in documents:
        builder.add(document)
    return replace(builder.finish(), versions=dict(versions or {}))


class _Builder:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.schemas: dict[str, tuple[SourceDocument, SchemaDocument]] = {}
        self.workflows: dict[str, tuple[SourceDocument, Workflow]] = {}
        self.providers: dict[str, tuple[SourceDocument, ProviderDocument]] = {}
        self.hashes: dict[tuple[Kind, str], str] = {}
        # Ids of documents that failed validation: references to them are not
        # reported again as unknown, the document's own problems say enough.
        self.invalid: set[tuple[Kind, str]] = set()
        self.lenient: set[tuple[Kind, str]] = set()
        self.disabled_schemas: dict[str, str] = {}
        # Workflows using a disabled schema: their bindings are disabled too.
        self.disabled_workflows: dict[str, str] = {}
        self.disabled_bindings: list[DisabledBinding] = []

    def report(self, document: SourceDocument, path: tuple[PathPart, ...], message: str) -> None:
        self.problems.append(source_problem(document, path, message))

    def add(self, document: SourceDocument, *, lenient: bool = False) -> None:
        model, problems = validate_document(document)
        self.problems.extend(problems)
        if model is None:
            self.invalid.add((document.kind, document.item_id or ""))
        if lenient:
            self.lenient.add((document.kind, document.item_id or ""))
        if isinstance(model, SchemaDocument):
            self._schema(document, model, lenient=lenient)
        elif isinstance(model, Workflow):
            self._keep(self.workflows, document, model, model.id, ("id",))
        elif isinstance(model, ProviderDocument):
            self._keep(self.providers, document, model, model.provider.id, ("provider", "id"))

    def _schema(self, document: SourceDocument, schema: SchemaDocument, *, lenient: bool) -> None:
        problems = schema_problems(schema.definition)
        if lenient and problems and all(p.needs_backtracking for p in problems):
            where = format_path(("definition", *problems[0].path))
            self.disabled_schemas[schema.id] = f"{where}: {problems[0].message}"
            problems = []
        for problem in problems:
            message = f"not a valid JSON Schema 2020-12: {problem.message}"
            self.report(document, ("definition", *problem.path), message)
        self._keep(self.schemas, document, schema, schema.id, ("id",))

    def _keep(
        self,
        table: dict[str, tuple[SourceDocument, M]],
        document: SourceDocument,
        model: M,
        item_id: str,
        id_path: tuple[PathPart, ...],
    ) -> None:
        if item_id in table:
            first = table[item_id][0].source
            self.report(
                document, id_path, f"duplicate {document.kind} id {item_id!r} (also in {first})"
            )
            return
        table[item_id] = (document, model)
        self.hashes[(document.kind, item_id)] = content_hash(model)

    def finish(self) -> Catalog:
        workflows = {wid: self._workflow(doc, wf) for wid, (doc, wf) in self.workflows.items()}
        bindings = self._bindings()
        if self.problems:
            raise DefinitionError(self.problems)
        validators = {sid: self._validator(sid, s) for sid, (_, s) in self.schemas.items()}
        return Catalog(
            schemas={sid: schema for sid, (_, schema) in self.schemas.items()},
            workflows=workflows,
            providers={pid: provider for pid, (_, provider) in self.providers.items()},
            bindings=bindings,
            hashes=self.hashes,
            validators=validators,
            active=frozenset(wid for wid, wf in workflows.items() if wf.spec.active),
            disabled_bindings=tuple(self.disabled_bindings),
            disabled_schemas=tuple(
                DisabledSchema(sid, reason) for sid, reason in sorted(self.disabled_schemas.items())
            ),
        )

    def _validator(self, schema_id: str, schema: SchemaDocument) -> SchemaValidator:
        reason = self.disabled_schemas.get(schema_id)
        if reason is None:
            return SchemaValidator(schema.definition)
        return SchemaValidator.refusing(f"schema {schema_id!r} is disabled: {reason}")

    def _workflow(self, document: SourceDocument, workflow: Workflow) -> CompiledWorkflow:
        compiled = compile_workflow(workflow, lambda path, msg: self.report(document, path, msg))
        for key, wanted in (("input_schema_id", "input"), ("output_schema_id", "output")):
            schema_id = getattr(workflow, key)
            if schema_id is None:
                continue
            found = self.schemas.get(schema_id)
            if found is None and ("schema", schema_id) not in self.invalid:
                hint = did_you_mean(schema_id, self.schemas)
                self.report(document, (key,), f"unknown schema {schema_id!r}{hint}")
            elif found is not None and found[1].type != wanted:
                self.report(document, (key,), f"schema {schema_id!r} is of type {found[1].type!r}")
            elif (reason := self.disabled_schemas.get(schema_id)) is not None:
                if ("workflow", workflow.id) in self.lenient:
                    why = f"workflow {workflow.id!r} uses schema {schema_id!r}, which is disabled"
                    self.disabled_workflows.setdefault(workflow.id, f"{why}: {reason}")
                else:
                    message = f"schema {schema_id!r} is disabled ({reason}); register a fixed one"
                    self.report(document, (key,), message)
        return compiled

    def _bindings(self) -> tuple[Binding, ...]:
        bindings: list[Binding] = []
        for provider_id in sorted(self.providers):
            document, provider = self.providers[provider_id]
            for index, entry in enumerate(provider.workflows):
                at: tuple[PathPart, ...] = ("workflows", index)
                known = entry.workflow_id in self.workflows
                if not known and ("workflow", entry.workflow_id) not in self.invalid:
                    hint = did_you_mean(entry.workflow_id, self.workflows)
                    message = f"unknown workflow {entry.workflow_id!r}{hint}"
                    self.report(document, (*at, "workflow_id"), message)
                refused: list[tuple[tuple[PathPart, ...], str]] = []
                triggers = self._triggers(at, entry, refused)
                if workflow_reason := self.disabled_workflows.get(entry.workflow_id):
                    refused.append(((*at, "workflow_id"), workflow_reason))
                if refused and ("provider", provider_id) in self.lenient:
                    reason = "; ".join(f"{format_path(where)}: {why}" for where, why in refused)
                    disabled = DisabledBinding(provider_id, entry.workflow_id, reason)
                    self.disabled_bindings.append(disabled)
                    triggers = ()
                else:
                    for where, why in refused:
                        self.report(document, where, why)
                binding = Binding(
                    provider_id=provider_id,
                    workflow_id=entry.workflow_id,
                    priority=entry.priority,
                    input=entry.input,
                    triggers=triggers,
                    order=len(bindings),
                )
                bindings.append(binding)
        return tuple(bindings)

    def _triggers(
        self,
        at: tuple[PathPart, ...],
        entry: BindingDocument,
        refused: list[tuple[tuple[PathPart, ...], str]],
    ) -> tuple[Trigger, ...]:
        """The binding's triggers; each condition that does not compile goes to `refused`."""
        triggers = []
        for t_index, trigger in enumerate(entry.triggers):
            conditions = []
            for c_index, cond in enumerate(trigger.conditions):
                value = cond.value if "value" in cond.model_fields_set else MISSING
                try:
                    conditions.append(compile_condition(cond.field, cond.operator, value))
                except TriggerError as exc:
                    where = (*at, "triggers", t_index, "conditions", c_index, exc.part)
                    refused.append((where, str(exc)))
            triggers.append(Trigger(trigger.event, tuple(conditions)))
        return tuple(triggers)
