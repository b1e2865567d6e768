"""One index of the Elasticsearch 8 test server: settings, documents with
versions and sequence numbers, delete tombstones (index.gc_deletes), and the
refresh that makes writes visible to _search/_count.

Version rules are those of InternalEngine/VersionType: external versions must
be greater than the stored one (external_gte: not smaller), a tombstone keeps
its version until gc_deletes has passed, internal versions count up from the
document's or tombstone's version. Times come from a monotonic clock.
"""

import base64
import collections
import operator
import os
import time
import zlib

from es_util import EsError, illegal_argument, loads, parse_time_ms

PRIMARY_TERM = 1

# Index settings accepted (normalized "index." names) and prefixes of groups.
KNOWN_SETTINGS = {
    "number_of_shards", "number_of_replicas", "refresh_interval", "gc_deletes",
    "max_result_window", "max_inner_result_window", "codec", "hidden", "priority",
    "auto_expand_replicas", "default_pipeline", "final_pipeline", "number_of_routing_shards",
    "lifecycle.name", "lifecycle.rollover_alias", "lifecycle.parse_origination_date",
    "lifecycle.origination_date", "lifecycle.indexing_complete", "lifecycle.step.wait_time_threshold",
    "mapping.total_fields.limit", "mapping.depth.limit", "mapping.nested_fields.limit",
    "mapping.nested_objects.limit", "mapping.field_name_length.limit", "mapping.ignore_malformed",
    "mapping.coerce", "mapping.dimension_fields.limit", "max_docvalue_fields_search",
    "max_script_fields", "max_terms_count", "max_regex_length", "max_ngram_diff",
    "max_shingle_diff", "max_refresh_listeners", "max_slices_per_scroll", "max_rescore_window",
    "load_fixed_bitset_filters_eagerly", "shard.check_on_startup", "soft_deletes.enabled",
    "soft_deletes.retention_lease.period", "write.wait_for_active_shards", "mode",
    "time_series.start_time", "time_series.end_time", "routing_path", "query.default_field",
    "format", "search.idle.after", "sort.field", "sort.order", "sort.mode", "sort.missing",
    "unassigned.node_left.delayed_timeout", "version.created",
}
KNOWN_PREFIXES = ("analysis.", "routing.", "blocks.", "similarity.", "merge.", "translog.",
                  "store.", "indexing.", "search.", "highlight.", "allocation.", "query_string.",
                  "frozen.", "queries.", "requests.", "fielddata.", "compound_format")
PRIVATE_SETTINGS = {"creation_date", "uuid", "provided_name", "version.created"}
STATIC_SETTINGS = {"number_of_shards", "codec", "number_of_routing_shards", "mode",
                   "sort.field", "sort.order", "routing_path", "soft_deletes.enabled"}


def _flatten(prefix, value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(prefix + "." + k if prefix else k, v, out)
    else:
        out[prefix] = value


def _setting_text(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, list):
        return [_setting_text(x) for x in v]
    return str(v) if v is not None else None


def normalize_settings(settings, creating=True):
    """Flat {"index.x": "text"} of a settings object (nested or dotted,
    with or without the "index." prefix), validated like IndexScopedSettings."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise illegal_argument("malformed settings section, should include an inner object")
    flat = {}
    _flatten("", settings, flat)
    out = {}
    for key, value in flat.items():
        name = key if key.startswith("index.") else "index." + key
        short = name[len("index."):]
        if creating and short in PRIVATE_SETTINGS:
            raise illegal_argument("private index setting [%s] can not be set explicitly" % name)
        if short not in KNOWN_SETTINGS and not short.startswith(KNOWN_PREFIXES):
            raise illegal_argument(
                "unknown setting [%s] please check that any required plugins are installed, or "
                "check the breaking changes documentation for removed settings" % name)
        text = _setting_text(value)
        _validate_setting(name, short, text)
        out[name] = text
    return out


def _int_setting(name, text, minimum):
    try:
        n = int(str(text))
    except ValueError:
        raise illegal_argument("Failed to parse value [%s] for setting [%s]" % (text, name))
    if n < minimum:
        raise illegal_argument("Failed to parse value [%s] for setting [%s] must be >= %d"
                               % (text, name, minimum))
    return n


def _validate_setting(name, short, text):
    if text is None:
        return
    if short == "number_of_shards":
        n = _int_setting(name, text, 1)
        if n > 1024:
            raise illegal_argument("Failed to parse value [%s] for setting [%s] must be <= 1024"
                                   % (text, name))
    elif short in ("number_of_replicas", "mapping.total_fields.limit", "max_result_window",
                   "priority"):
        _int_setting(name, text, 0 if short in ("number_of_replicas", "priority") else 1)
    elif short in ("refresh_interval", "gc_deletes", "search.idle.after",
                   "unassigned.node_left.delayed_timeout"):
        parse_time_ms(text, name)
    elif short in ("hidden", "mapping.ignore_malformed", "mapping.coerce",
                   "lifecycle.parse_origination_date"):
        if text not in ("true", "false"):
            raise illegal_argument("Failed to parse value [%s] as only [true] or [false] are "
                                   "allowed." % text)


def nest_settings(flat):
    """{"index": {"number_of_shards": "1", "lifecycle": {"name": ...}}} form."""
    out = {}
    for key in sorted(flat):
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = flat[key]
    return out


def new_uuid():
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")[:22]


def new_doc_id():
    return base64.urlsafe_b64encode(os.urandom(15)).decode()


_monotonic = time.monotonic


def mono_ms():
    return _monotonic() * 1000.0


class Doc(tuple):
    """A stored document: (version, seq_no, raw, shard), made with
    new_doc(). Only the _source text is kept (memory: benchmarks send
    millions of documents); searches and updates parse it again. A tuple
    is made in C, without running an __init__ (the bulk hot path)."""

    __slots__ = ()
    version = property(operator.itemgetter(0))
    seq_no = property(operator.itemgetter(1))
    raw = property(operator.itemgetter(2))
    shard = property(operator.itemgetter(3))

    @property
    def source(self):
        try:
            return loads(self[2])
        except ValueError as e:  # only --lean stores documents unchecked
            raise EsError(500, "exception", "a stored document is not JSON (%s): the server "
                          "runs with --lean, which stores documents unchecked; run it without "
                          "--lean to have such documents refused when indexed" % e)


def new_doc(version, seq_no, raw, shard, _new=tuple.__new__):
    return _new(Doc, (version, seq_no, raw, shard))


class Tombstone:
    __slots__ = ("version", "seq_no", "time")

    def __init__(self, version, seq_no, at):
        self.version = version
        self.seq_no = seq_no
        self.time = at


class Index:
    def __init__(self, name, settings, mapping, aliases):
        self.name = name
        self.uuid = new_uuid()
        self.creation_date = int(time.time() * 1000)
        settings = dict(settings)
        settings.setdefault("index.number_of_shards", "1")
        settings.setdefault("index.number_of_replicas", "1")
        settings["index.provided_name"] = name
        settings["index.creation_date"] = str(self.creation_date)
        settings["index.uuid"] = self.uuid
        settings["index.version.created"] = "8500003"
        settings.setdefault("index.routing.allocation.include._tier_preference", "data_content")
        self.settings = settings
        self.mapping = mapping
        self.aliases = aliases
        self.docs = {}
        self.tombstones = {}
        self.searchable = {}
        self.pending = collections.deque()
        self.shards = int(settings["index.number_of_shards"])
        self.seq = [-1] * self.shards
        self.last_tick = mono_ms()
        self.lean_docs = 0  # fast path documents (es_bulk.BulkExecutor._unchecked)
        self.apply_dynamic_settings()

    def apply_dynamic_settings(self):
        s = self.settings
        self.replicas = int(s.get("index.number_of_replicas", "1"))
        interval = parse_time_ms(s.get("index.refresh_interval", "1s"), "index.refresh_interval")
        self.refresh_ms = interval if interval > 0 else None
        self.gc_ms = parse_time_ms(s.get("index.gc_deletes", "60s"), "index.gc_deletes")
        self.max_window = int(s.get("index.max_result_window", "10000"))

    # --- shards -------------------------------------------------------------------

    def shard_of(self, doc_id, routing=None):
        if self.shards == 1:
            return 0
        key = (routing if routing is not None else doc_id).encode("utf-8")
        return zlib.crc32(key) % self.shards

    def shards_info(self):
        return {"total": 1 + self.replicas, "successful": 1, "failed": 0}

    def health(self):
        return "yellow" if self.replicas >= 1 else "green"

    def _next_seq(self, shard):
        self.seq[shard] += 1
        return self.seq[shard]

    # --- versions -------------------------------------------------------------------

    def live_tombstone(self, doc_id, now):
        t = self.tombstones.get(doc_id)
        if t is None:
            return None
        if now - t.time > self.gc_ms:
            del self.tombstones[doc_id]
            return None
        return t

    def _conflict(self, doc_id, shard, explanation):
        return EsError(409, "version_conflict_engine_exception",
                       "[%s]: version conflict, %s" % (doc_id, explanation),
                       {"index_uuid": self.uuid, "shard": str(shard), "index": self.name})

    def _check_cas(self, doc_id, shard, cur, if_seq_no, if_primary_term):
        if if_seq_no is None:
            return
        if cur is None:
            raise self._conflict(doc_id, shard, "required seqNo [%d], primary term [%d]. but no "
                                 "document was found" % (if_seq_no, if_primary_term))
        if cur.seq_no != if_seq_no or if_primary_term != PRIMARY_TERM:
            raise self._conflict(doc_id, shard, "required seqNo [%d], primary term [%d]. current "
                                 "document has seqNo [%d] and primary term [%d]"
                                 % (if_seq_no, if_primary_term, cur.seq_no, PRIMARY_TERM))

    def _check_external(self, doc_id, shard, current_version, version, version_type):
        if current_version is None:
            return
        if version_type == "external_gte":
            if current_version > version:
                raise self._conflict(doc_id, shard, "current version [%d] is higher than the one "
                                     "provided [%d]" % (current_version, version))
        elif current_version >= version:
            raise self._conflict(doc_id, shard, "current version [%d] is higher or equal to the "
                                 "one provided [%d]" % (current_version, version))

    # --- writes ----------------------------------------------------------------------

    def write(self, doc_id, raw, op):
        """Indexes a document; op carries op_type, version, version_type,
        if_seq_no, if_primary_term, routing. Returns (Doc, created)."""
        now = mono_ms()
        shard = self.shard_of(doc_id, op.routing)
        cur = self.docs.get(doc_id)
        tomb = None if cur is not None else self.live_tombstone(doc_id, now)
        self._check_cas(doc_id, shard, cur, op.if_seq_no, op.if_primary_term)
        if op.op_type == "create" and cur is not None:
            raise self._conflict(doc_id, shard, "document already exists (current version [%d])"
                                 % cur.version)
        current_version = cur.version if cur is not None else (
            tomb.version if tomb is not None else None)
        if op.version_type in ("external", "external_gt", "external_gte"):
            self._check_external(doc_id, shard, current_version, op.version, op.version_type)
            version = op.version
        else:
            version = 1 if current_version is None else current_version + 1
        doc = new_doc(version, self._next_seq(shard), raw, shard)
        self.docs[doc_id] = doc
        if tomb is not None:
            del self.tombstones[doc_id]
        self.pending.append((now, doc_id, doc))
        return doc, cur is None

    def write_external(self, doc_id, raw, version, version_type, now, _new=tuple.__new__):
        """write() of an op without routing, compare-and-set or op_type create
        and with an external version_type (the bulk fast path), at now
        (mono_ms(); the bulk's start: a refresh sees the bulk whole or not at
        all): (version, seq_no, created), or None when the version conflicts
        (write() then raises the 409)."""
        cur = self.docs.get(doc_id)
        tomb = None
        if cur is not None:
            current = cur.version
        else:
            tomb = self.live_tombstone(doc_id, now) if self.tombstones else None
            current = tomb.version if tomb is not None else None
        if current is not None and (current > version or (current == version and
                                                          version_type != "external_gte")):
            return None
        shard = 0 if self.shards == 1 else self.shard_of(doc_id)
        seq = self.seq
        seq_no = seq[shard] = seq[shard] + 1
        doc = _new(Doc, (version, seq_no, raw, shard))
        self.docs[doc_id] = doc
        if tomb is not None:
            del self.tombstones[doc_id]
        self.pending.append((now, doc_id, doc))
        return version, seq_no, cur is None

    def delete(self, doc_id, op):
        """Deletes (or records a tombstone for) a document. Returns
        (version, seq_no, shard, found)."""
        now = mono_ms()
        shard = self.shard_of(doc_id, op.routing)
        cur = self.docs.get(doc_id)
        tomb = None if cur is not None else self.live_tombstone(doc_id, now)
        self._check_cas(doc_id, shard, cur, op.if_seq_no, op.if_primary_term)
        current_version = cur.version if cur is not None else (
            tomb.version if tomb is not None else None)
        if op.version_type in ("external", "external_gt", "external_gte"):
            self._check_external(doc_id, shard, current_version, op.version, op.version_type)
            version = op.version
        else:
            version = 1 if current_version is None else current_version + 1
        seq_no = self._next_seq(shard)
        self.tombstones[doc_id] = Tombstone(version, seq_no, now)
        if cur is not None:
            del self.docs[doc_id]
            self.pending.append((now, doc_id, None))
        return version, seq_no, shard, cur is not None

    def noop_seq(self, doc_id):
        return self.docs[doc_id].seq_no

    # --- refresh ---------------------------------------------------------------------------

    def _apply_pending(self, upto):
        pending = self.pending
        searchable = self.searchable
        while pending and (upto is None or pending[0][0] <= upto):
            _, doc_id, doc = pending.popleft()
            if doc is None:
                searchable.pop(doc_id, None)
            else:
                searchable[doc_id] = doc

    def refresh(self):
        """Explicit refresh (?refresh, _refresh): everything written is visible."""
        self._apply_pending(None)

    def scheduled_refresh(self, now=None):
        """The periodic refresh every refresh_interval, evaluated lazily: writes
        made up to the last tick that has passed become visible."""
        if self.refresh_ms is None:
            return
        now = mono_ms() if now is None else now
        elapsed = now - self.last_tick
        if elapsed < self.refresh_ms:
            return
        self.last_tick += (elapsed // self.refresh_ms) * self.refresh_ms
        self._apply_pending(self.last_tick)

    def prune_tombstones(self):
        now = mono_ms()
        dead = [k for k, t in self.tombstones.items() if now - t.time > self.gc_ms]
        for k in dead:
            del self.tombstones[k]
