"""The artifact registry: immutable, manifested artifact versions plus movable aliases.

Storage is any ``pyarrow.fs`` filesystem named by a URI (see :class:`core.storage.Storage`).
Layout under the root::

    <root>/<tenant>/<kind>/<version>/...files...               copied from src_dir
    <root>/<tenant>/<kind>/<version>/MANIFEST.json             written last: makes it visible
    <root>/<tenant>/<kind>/<version>/_reviews/<ts>-<id>.json   launch-review records
    <root>/<tenant>/<kind>/_aliases/<alias>.json               AliasRecord, replaced atomically
    <root>/_audit/<ts>-<id>.json                               one audit record per change

Invariants:

* A version is visible only once its ``MANIFEST.json`` exists, and the manifest is written
  after every file, in one atomic step. A writer killed mid-publish leaves an invisible
  directory that :meth:`Registry.gc` removes later.
* Versions never change. Version ids (``v20261122T034600123Z-3f9a1c``: UTC time to the
  millisecond, then random hex) sort by creation time and are unique without a lock.
* An alias only ever points at a visible version; every alias move appends an audit record.
  Audit and review records are one file each, so concurrent writers never contend for a file.
  On local storage promote/rollback hold a file lock; on object stores the last writer wins
  and the audit log shows each move with the ``previous`` it saw.
* ``production`` and ``previous`` move only through :meth:`Registry.promote` (review-gated,
  see :mod:`core.promotion`; break-glass flagged on the alias and in the audit) and
  :meth:`Registry.rollback` (never gated). Review decisions (approve, reject, sign-off) are
  audited too.

Length: publish, aliases, review gate and audit act on one on-disk layout with one set of
atomic-write rules; the promotion policy and manifests are their own modules.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from core.manifest import (
    ARTIFACT_KINDS,
    AliasRecord,
    AuditRecord,
    FileEntry,
    Lineage,
    Manifest,
    Owner,
    ReviewRecord,
)
from core.promotion import PromotionPolicy, gate_problems, load_promotion_policy
from core.storage import Storage

MANIFEST_NAME = "MANIFEST.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_RE = re.compile(r"^v\d{8}T\d{9}Z-[0-9a-f]{6}$")
_DIR, _FILE = pafs.FileType.Directory, pafs.FileType.File


class RegistryError(Exception):
    """A registry operation that cannot be done as asked (bad name, no previous version...)."""


class PromotionRefused(RegistryError):
    """A promote the gate refuses: ``problems`` names each missing check or sign-off (or the
    freeze, or why break-glass is not allowed); the message is one line for the CLI."""

    def __init__(self, kind: str, tenant: str, version: str, problems: list[str], hint: str = ""):
        self.kind, self.tenant, self.version, self.problems = kind, tenant, version, problems
        super().__init__(
            f"refusing to promote {kind} {version} for tenant {tenant!r}: "
            + "; ".join(problems)
            + (f" ({hint})" if hint else "")
        )


PROTECTED_ALIASES = ("production", "previous")
"""Aliases only :meth:`Registry.promote` and :meth:`Registry.rollback` move."""


class ArtifactNotFound(RegistryError, KeyError):
    """An unknown version or alias. Subclasses KeyError for mapping-like use."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else "artifact not found"


_version_lock = threading.Lock()
_last_ms = 0


def new_version(now: datetime | None = None) -> str:
    """A fresh version id: strictly increasing within a process, unique across processes."""
    global _last_ms
    ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    with _version_lock:
        ms = max(ms, _last_ms + 1)
        _last_ms = ms
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return f"v{stamp:%Y%m%dT%H%M%S}{ms % 1000:03d}Z-{secrets.token_hex(3)}"


def version_time(version: str) -> datetime:
    """The creation time encoded in a version id."""
    base = datetime.strptime(version[1:16], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return base + timedelta(milliseconds=int(version[16:19]))


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise RegistryError(
            f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' (at most 64), "
            "starting with a letter or digit"
        )
    return value


def _check_kind(kind: str) -> str:
    if kind not in ARTIFACT_KINDS:
        raise RegistryError(
            f"unknown artifact kind {kind!r}; expected one of {', '.join(ARTIFACT_KINDS)}"
        )
    return kind


def _stamp() -> str:
    """A time-sortable, collision-free record file name."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.json"


class Registry:
    """Artifact registry rooted at ``uri``.

    ``filesystem`` overrides what ``uri`` would give (see :class:`core.storage.Storage`).
    ``policy`` is the promotion gate's policy (default: :func:`core.promotion.load_promotion_policy`,
    read on first use). Instances are cheap and hold no open handles; manifests, being
    immutable, are cached.
    """

    def __init__(
        self,
        uri: str | os.PathLike,
        *,
        filesystem: pafs.FileSystem | None = None,
        policy: PromotionPolicy | None = None,
        owners: Any = None,
    ):
        """``owners``: a :class:`core.owners.OwnersConfig` (default: the owners file)."""
        self.store = Storage(uri, filesystem)
        self.uri = self.store.uri
        self._manifests: dict[tuple[str, str, str], Manifest] = {}
        self._policy = policy
        self._owners = owners

    @property
    def policy(self) -> PromotionPolicy:
        if self._policy is None:
            self._policy = load_promotion_policy()
        return self._policy

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    def _kind_dir(self, kind: str, tenant: str) -> str:
        return self.store.path(_check_name("tenant", tenant), _check_kind(kind))

    def _version_dir(self, kind: str, tenant: str, version: str) -> str:
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise ArtifactNotFound(
                f"{version!r} is not a version id (expected e.g. v20261122T034600123Z-3f9a1c)"
            )
        return f"{self._kind_dir(kind, tenant)}/{version}"

    # ---- publish and read -------------------------------------------------------------------

    def publish(
        self,
        kind: str,
        tenant: str,
        src_dir: str | os.PathLike,
        *,
        owner: Owner | None = None,
        lineage: Lineage,
        metrics: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        description: str = "",
        alias: str | None = "candidate",
        actor: str = "system",
    ) -> Manifest:
        """Copy every file under ``src_dir`` into a new immutable version; return its manifest.

        Files are copied first, the manifest last (that makes the version visible), then
        ``alias`` (if not None) moves to it. The publish and the alias move are audited.

        ``owner`` defaults to the owners file's entry for ``(kind, tenant)``
        (:mod:`core.owners`), which also supplies ``last_reviewed`` to an owner given without
        one when it names the same team and primary. Without any owner the publish is refused.
        """
        base = self._kind_dir(kind, tenant)
        owner = self._owner_for(kind, tenant, owner)
        if alias is not None:
            _check_name("alias", alias)
        src = Path(src_dir)
        if not src.is_dir():
            raise RegistryError(f"publish {kind}/{tenant}: source directory {src} does not exist")
        files = sorted(p for p in src.rglob("*") if p.is_file())
        if not files:
            raise RegistryError(f"publish {kind}/{tenant}: source directory {src} has no files")
        for p in files:
            if p.relative_to(src).parts[0] in (MANIFEST_NAME, "_reviews"):
                raise RegistryError(f"publish {kind}/{tenant}: {p} uses a reserved name")

        version = new_version()
        vdir = f"{base}/{version}"
        entries = []
        for p in files:
            rel = p.relative_to(src).as_posix()
            size, sha = self.store.upload(p, f"{vdir}/{rel}")
            entries.append(FileEntry(path=rel, bytes=size, sha256=sha))
        manifest = Manifest(
            kind=kind,
            tenant=tenant,
            version=version,
            created_at=version_time(version),
            owner=owner,
            lineage=lineage,
            metrics=metrics or {},
            config=config or {},
            files=entries,
            description=description,
        )
        body = manifest.model_dump_json(indent=2).encode()
        self.store.write_atomic(f"{vdir}/{MANIFEST_NAME}", body)
        self._manifests[(tenant, kind, version)] = manifest
        self._audit("publish", kind, tenant, version=version, actor=actor, reason=description)
        if alias is not None:
            self.set_alias(kind, tenant, alias, version, actor=actor, reason="publish")
        return manifest

    def _owner_for(self, kind: str, tenant: str, owner: Owner | None) -> Owner:
        from core.owners import complete_owner, owner_problems

        default = self.owners.owner_for(kind, tenant)
        owner = complete_owner(owner, default) if owner is not None else default
        problems = owner_problems(owner)
        if problems:
            raise RegistryError(
                f"publish {kind}/{tenant}: refused, {'; '.join(problems)}: pass an owner (team, "
                f"primary, escalation, runbook) or add a `{kind}` entry to configs/owners.yaml"
            )
        return owner

    @property
    def owners(self):
        """The owners file (:func:`core.owners.load_owners`), read on first use."""
        if self._owners is None:
            from core.owners import load_owners

            self._owners = load_owners()
        return self._owners

    def manifest(self, kind: str, tenant: str, version: str) -> Manifest:
        """The manifest of a visible version; :class:`ArtifactNotFound` if there is none."""
        key = (tenant, kind, version)
        if key not in self._manifests:
            path = f"{self._version_dir(kind, tenant, version)}/{MANIFEST_NAME}"
            try:
                data = self.store.read_json(path)
            except FileNotFoundError:
                raise ArtifactNotFound(
                    f"no {kind} version {version} for tenant {tenant!r} in registry {self.uri}"
                ) from None
            self._manifests[key] = Manifest.model_validate(data)
        return self._manifests[key]

    def versions(self, kind: str | None = None, tenant: str | None = None) -> list[Manifest]:
        """Visible versions, optionally filtered, sorted by version id (then tenant, kind)."""
        tenants = [tenant] if tenant is not None else self._tenant_dirs()
        kinds = [_check_kind(kind)] if kind is not None else list(ARTIFACT_KINDS)
        out = []
        for t in tenants:
            for k in kinds:
                for info in self.store.ls(self._kind_dir(k, t)):
                    if info.type != _DIR or not _VERSION_RE.match(info.base_name):
                        continue
                    try:
                        out.append(self.manifest(k, t, info.base_name))
                    except ArtifactNotFound:
                        continue  # no manifest (yet, or a killed writer): not visible
        return sorted(out, key=lambda m: (m.version, m.tenant, m.kind))

    def _tenant_dirs(self) -> list[str]:
        infos = self.store.ls(self.store.root)
        return sorted(i.base_name for i in infos if i.type == _DIR and _NAME_RE.match(i.base_name))

    def tenants(self) -> list[str]:
        """Tenants with at least one visible version."""
        return [t for t in self._tenant_dirs() if self.versions(tenant=t)]

    def verify(self, kind: str, tenant: str, version: str) -> None:
        """Re-hash every file of a version against its manifest; RegistryError on mismatch."""
        vdir = self._version_dir(kind, tenant, version)
        for entry in self.manifest(kind, tenant, version).files:
            if self.store.sha256(f"{vdir}/{entry.path}") != entry.sha256:
                raise RegistryError(f"{kind}/{tenant}/{version}: {entry.path} fails its sha256")

    def local_path(self, kind: str, tenant: str, version: str) -> Path:
        """A local directory holding the version's files.

        Local storage: the version directory itself. Remote storage: a cache under
        ``$RECSYS_CACHE_DIR`` (default ``~/.cache/recsys``) ``/registry/...``, downloaded
        once; every file is checked against its sha256 before the directory moves into place.
        """
        manifest = self.manifest(kind, tenant, version)
        vdir = self._version_dir(kind, tenant, version)
        if self.store.is_local:
            return Path(vdir)
        cache = Path(os.environ.get("RECSYS_CACHE_DIR", "~/.cache/recsys")).expanduser()
        root_key = f"{self.store.fs.type_name}-{self.store.root.strip('/').replace('/', '_')}"
        dest = cache / "registry" / root_key / tenant / kind / version
        if dest.is_dir():
            return dest
        tmp = dest.with_name(f".tmp-{version}-{uuid.uuid4().hex[:8]}")
        try:
            for entry in manifest.files:
                if self.store.download(f"{vdir}/{entry.path}", tmp / entry.path) != entry.sha256:
                    raise RegistryError(
                        f"{kind}/{tenant}/{version}: downloaded {entry.path} fails its sha256"
                    )
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(dest)
            except OSError:
                if not dest.is_dir():  # a concurrent downloader won the race: theirs is as good
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    # ---- aliases ----------------------------------------------------------------------------

    def _alias_path(self, kind: str, tenant: str, alias: str) -> str:
        return f"{self._kind_dir(kind, tenant)}/_aliases/{_check_name('alias', alias)}.json"

    def resolve(self, kind: str, tenant: str, alias: str) -> str | None:
        """The version ``alias`` points at, or None if the alias is not set."""
        record = self.alias_record(kind, tenant, alias)
        return record.version if record is not None else None

    def alias_record(self, kind: str, tenant: str, alias: str) -> AliasRecord | None:
        """The alias file: version, when, by whom, why, whether by break-glass; None if unset."""
        try:
            return AliasRecord.model_validate(
                self.store.read_json(self._alias_path(kind, tenant, alias))
            )
        except FileNotFoundError:
            return None

    def aliases(self, kind: str, tenant: str) -> dict[str, str]:
        """All aliases of one kind and tenant: alias -> version, sorted by alias."""
        out = {}
        for info in self.store.ls(f"{self._kind_dir(kind, tenant)}/_aliases"):
            name = info.base_name.removesuffix(".json")
            if info.type == _FILE and info.base_name.endswith(".json") and _NAME_RE.match(name):
                version = self.resolve(kind, tenant, name)
                if version is not None:
                    out[name] = version
        return dict(sorted(out.items()))

    def _move(self, action: str, kind, tenant, alias, version, actor, reason,
              break_glass: bool = False, role: str | None = None, flag: bool | None = None) -> None:  # fmt: skip
        """Point ``alias`` at ``version`` and audit it. ``flag``: the alias's break-glass mark
        (default ``break_glass``; a swap carries the moved version's mark along)."""
        self.manifest(kind, tenant, version)  # refuses versions that are not visible
        previous = self.resolve(kind, tenant, alias)
        body = AliasRecord(alias=alias, version=version, at=datetime.now(UTC), actor=actor,
                           reason=reason, break_glass=break_glass if flag is None else flag)  # fmt: skip
        self.store.write_atomic(self._alias_path(kind, tenant, alias), body.model_dump_json().encode())
        self._audit(action, kind, tenant, alias=alias, version=version, previous=previous,
                    actor=actor, reason=reason, break_glass=break_glass, role=role)  # fmt: skip

    def _lock(self, kind: str, tenant: str):
        return self.store.local_lock(f"{self._kind_dir(kind, tenant)}/_aliases")

    def set_alias(
        self, kind: str, tenant: str, alias: str, version: str, *, actor: str, reason: str = ""
    ) -> None:
        """Point ``alias`` at ``version`` (which must be visible) and audit the move.

        ``production`` and ``previous`` are refused: they move only by promote and rollback.
        """
        self.manifest(kind, tenant, version)
        if alias in PROTECTED_ALIASES:
            raise RegistryError(
                f"alias {alias!r} moves only by promote (review-gated) or rollback"
            )
        with self._lock(kind, tenant):
            self._move("set_alias", kind, tenant, alias, version, actor, reason)

    def promote(
        self,
        kind: str,
        tenant: str,
        version: str,
        *,
        actor: str,
        reason: str = "",
        break_glass: bool = False,
        now: datetime | None = None,
        freeze_exempt: str = "",
    ) -> dict[str, str]:
        """Make ``version`` production; the old production becomes ``previous``.

        The gate (:mod:`core.promotion`): the version needs an approval on passing automatic
        checks and every sign-off of its kind's checklist, and no freeze may cover it at
        ``now``; else :class:`PromotionRefused` names what is missing. ``break_glass=True``
        skips both, only for an actor in an emergency role and with a ``reason``; the audit
        records and the production alias carry the flag. Promoting the current production
        version changes nothing (and checks nothing). ``freeze_exempt``: why this reviewed
        change may pass a freeze (an emergency kind, e.g. a config that only adds safety rules:
        :func:`core.tenant_config.safety_only`); the review gate still applies and, when a
        freeze is on, the audit reason says so. Returns the aliases after.
        """
        self.manifest(kind, tenant, version)
        policy = self.policy
        role = None
        if break_glass:
            role = policy.emergency_role(actor)
            problems = [] if role else [f"{actor!r} is in no emergency role"]
            if not reason.strip():
                problems.append("break-glass needs a reason")
            if problems:
                roles = ", ".join(policy.emergency_roles) or "none configured"
                raise PromotionRefused(kind, tenant, version, problems, f"emergency roles: {roles}")
        with self._lock(kind, tenant):
            current = self.alias_record(kind, tenant, "production")
            if current is not None and current.version == version:
                return self.aliases(kind, tenant)
            if freeze_exempt and self.policy.freeze_at(kind, tenant, now) is not None:
                reason = f"{reason} [{freeze_exempt}]".strip()
            if not break_glass:
                problems = self.promotion_problems(kind, tenant, version, now, bool(freeze_exempt))
                if problems:
                    raise PromotionRefused(kind, tenant, version, problems,
                                           "record them with `recsys review`, or break glass")  # fmt: skip
            if current is not None:
                self._move("promote", kind, tenant, "previous", current.version, actor, reason,
                           break_glass, role, flag=current.break_glass)  # fmt: skip
            self._move("promote", kind, tenant, "production", version, actor, reason,
                       break_glass, role)  # fmt: skip
        return self.aliases(kind, tenant)

    def rollback(self, kind: str, tenant: str, *, actor: str, reason: str = "") -> dict[str, str]:
        """Swap ``previous`` and ``production`` (so a second rollback rolls forward again).

        Raises RegistryError if there is no ``previous``. Returns the aliases after.
        """
        with self._lock(kind, tenant):
            previous = self.alias_record(kind, tenant, "previous")
            if previous is None:
                raise RegistryError(
                    f"cannot roll back {kind} for tenant {tenant!r}: no 'previous' version "
                    "(nothing has been promoted over another version)"
                )
            current = self.alias_record(kind, tenant, "production")
            self._move("rollback", kind, tenant, "production", previous.version, actor, reason,
                       flag=previous.break_glass)  # fmt: skip
            if current is not None:
                self._move("rollback", kind, tenant, "previous", current.version, actor, reason,
                           flag=current.break_glass)  # fmt: skip
        return self.aliases(kind, tenant)

    def production_versions(self, tenant: str) -> dict[str, AliasRecord]:
        """Kind -> the ``production`` alias record (version, since, actor, reason, and
        ``break_glass``: reached production without passing review), for kinds that have one.
        What ``GET /v1/versions`` shows per tenant."""
        out = {}
        for kind in ARTIFACT_KINDS:
            record = self.alias_record(kind, tenant, "production")
            if record is not None:
                out[kind] = record
        return out

    def promotion_problems(
        self, kind: str, tenant: str, version: str, now: datetime | None = None,
        freeze_exempt: bool = False,
    ) -> list[str]:
        """What a reviewed :meth:`promote` of ``version`` at ``now`` (default: now) would be
        refused for: missing checks and sign-offs, a freeze (unless ``freeze_exempt``: an
        emergency change such as a safety rule). Empty: it may be promoted."""
        problems = gate_problems(self.reviews(kind, tenant, version), self.policy.checklist(kind))
        freeze = self.policy.freeze_at(kind, tenant, now)
        if freeze is not None and not freeze_exempt:
            problems.append(f"change freeze {freeze.name!r} until {freeze.end:%Y-%m-%d %H:%M} UTC")
        return problems

    # ---- reviews and audit ------------------------------------------------------------------

    def add_review(self, record: ReviewRecord) -> None:
        """Store a launch-review record for a visible version (the manifest stays unchanged).

        Decisions (approve, reject, sign-off) are audited; automatic-check notes are not.
        """
        self.manifest(record.kind, record.tenant, record.version)
        vdir = self._version_dir(record.kind, record.tenant, record.version)
        self.store.write_atomic(f"{vdir}/_reviews/{_stamp()}", record.model_dump_json().encode())
        if record.decision != "note":
            self._audit("review", record.kind, record.tenant, actor=record.actor,
                        version=record.version, reason=record.comment,
                        decision=record.decision, item=record.item)  # fmt: skip

    def reviews(self, kind: str, tenant: str, version: str) -> list[ReviewRecord]:
        """Review records of a version, oldest first."""
        self.manifest(kind, tenant, version)
        vdir = self._version_dir(kind, tenant, version)
        paths = _records(self.store.ls(f"{vdir}/_reviews"))
        return [ReviewRecord.model_validate(self.store.read_json(p)) for p in paths]

    def _audit(self, action: str, kind: str, tenant: str, *, actor: str, **fields) -> None:
        record = AuditRecord(
            at=datetime.now(UTC), actor=actor, action=action, kind=kind, tenant=tenant, **fields
        )
        self.store.write_atomic(
            self.store.path("_audit", _stamp()), record.model_dump_json().encode()
        )

    def audit(self, kind: str | None = None, tenant: str | None = None) -> list[AuditRecord]:
        """Audit records, optionally filtered by kind and tenant, in time order."""
        paths = _records(self.store.ls(self.store.path("_audit")))
        records = [AuditRecord.model_validate(self.store.read_json(p)) for p in paths]
        records = [
            r for r in records
            if (kind is None or r.kind == kind) and (tenant is None or r.tenant == tenant)
        ]  # fmt: skip
        return sorted(records, key=lambda r: r.at)  # stable: file-name order breaks ties

    # ---- maintenance ------------------------------------------------------------------------

    def gc(self, older_than_minutes: float = 60.0) -> list[str]:
        """Delete unpublished version directories (no manifest) older than the given age.

        Returns the deleted paths. Young orphans are kept: they may be a publish in progress.
        """
        cutoff = datetime.now(UTC) - timedelta(minutes=older_than_minutes)
        deleted = []
        for tenant in self._tenant_dirs():
            for kind in ARTIFACT_KINDS:
                for info in self.store.ls(self._kind_dir(kind, tenant)):
                    name = info.base_name
                    if info.type != _DIR or not _VERSION_RE.match(name):
                        continue
                    if version_time(name) > cutoff or self.store.is_file(
                        f"{info.path}/{MANIFEST_NAME}"
                    ):
                        continue
                    self.store.fs.delete_dir(info.path)
                    deleted.append(info.path)
        return deleted


def _records(infos: list[pafs.FileInfo]) -> list[str]:
    """Paths of committed record files (hidden temp files excluded), in name = time order."""
    names = [i for i in infos if i.type == _FILE and i.base_name.endswith(".json")]
    return [i.path for i in sorted(names, key=lambda i: i.base_name) if i.base_name[0] != "."]
