"""Composable index templates and ILM policies of the Elasticsearch 8 test
server: request validation (MetadataIndexTemplateService, LifecyclePolicy)
and the stored forms GET answers with.
"""

import datetime

from es_index import normalize_settings, nest_settings
from es_mapping import compile_mapping
from es_util import (EsError, NA, globs_overlap, glob_match, illegal_argument,
                     index_name_problem, validation_failed)

_TEMPLATE_KEYS = ("index_patterns", "template", "composed_of", "priority", "version", "_meta",
                  "data_stream", "allow_auto_create", "ignore_missing_component_templates",
                  "deprecated")
_TEMPLATE_BODY_KEYS = ("settings", "mappings", "aliases", "lifecycle")
_ALIAS_KEYS = ("filter", "index_routing", "search_routing", "routing", "is_write_index",
               "is_hidden")


def _unknown_field(where, key):
    return EsError(400, "x_content_parse_exception", "[1:2] [%s] unknown field [%s]"
                   % (where, key))


def validate_aliases(aliases, compile_filter):
    if aliases is None:
        return {}
    if not isinstance(aliases, dict):
        raise EsError(400, "x_content_parse_exception", "[1:2] [aliases] expected an object")
    out = {}
    for name, body in aliases.items():
        problem = index_name_problem(name)
        if problem:
            raise EsError(400, "invalid_alias_name_exception",
                          "Invalid alias name [%s]: %s" % (name, problem),
                          {"index_uuid": NA, "index": name})
        body = body or {}
        for key in body:
            if key not in _ALIAS_KEYS:
                raise _unknown_field("alias", key)
        if "filter" in body:
            compile_filter(body["filter"])
        out[name] = body
    return out


def validate_template(name, body, existing, compile_filter, create=False):
    """The stored form of a composable template PUT, or EsError."""
    if not isinstance(body, dict):
        raise EsError(400, "x_content_parse_exception", "[1:1] [index_template] expected an "
                      "object")
    for key in body:
        if key not in _TEMPLATE_KEYS:
            raise _unknown_field("index_template", key)
    if create and name in existing:
        raise illegal_argument("index template [%s] already exists" % name)
    patterns = body.get("index_patterns")
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise validation_failed(["index patterns are missing"])
    problems = []
    for p in patterns:
        if " " in p:
            problems.append("index_pattern [%s] must not contain a space" % p)
        if "," in p:
            problems.append("index_pattern [%s] must not contain a ','" % p)
        if "#" in p:
            problems.append("index_pattern [%s] must not contain a '#'" % p)
        if ":" in p:
            problems.append("index_pattern [%s] must not contain a ':'" % p)
        if p.startswith("_"):
            problems.append("index_pattern [%s] must not start with '_'" % p)
    if problems:
        raise EsError(400, "invalid_index_template_exception",
                      "index_template [%s] invalid, cause [Validation Failed: %s]"
                      % (name, "".join("%d: %s;" % (i + 1, m) for i, m in enumerate(problems))))
    priority = body.get("priority")
    if priority is not None and (not isinstance(priority, int) or priority < 0):
        raise validation_failed(["index template priority must be >= 0"])
    composed = body.get("composed_of") or []
    if composed and not body.get("ignore_missing_component_templates"):
        raise EsError(400, "invalid_index_template_exception",
                      "index_template [%s] invalid, cause [index template [%s] specifies "
                      "component templates %s that do not exist]"
                      % (name, name, "[" + ", ".join(composed) + "]"))
    tbody = body.get("template") or {}
    for key in tbody:
        if key not in _TEMPLATE_BODY_KEYS:
            raise _unknown_field("template", key)
    settings = normalize_settings(tbody.get("settings"))
    mappings = tbody.get("mappings")
    if mappings is not None:
        compile_mapping(mappings, settings)
        if isinstance(mappings, dict) and list(mappings) == ["_doc"]:
            mappings = mappings["_doc"]
    aliases = validate_aliases(tbody.get("aliases"), compile_filter)
    prio = priority or 0
    overlaps = {}
    for other, tdef in existing.items():
        if other == name or (tdef.get("priority") or 0) != prio:
            continue
        hit = [q for q in tdef["index_patterns"] if any(globs_overlap(p, q) for p in patterns)]
        if hit:
            overlaps[other] = tdef["index_patterns"]
    if overlaps:
        raise illegal_argument(
            "index template [%s] has index patterns %s matching patterns from existing templates "
            "[%s] with patterns (%s) that have the same priority [%d], multiple index templates "
            "may not match during index creation, please use a different priority"
            % (name, _java_list(patterns), ",".join(overlaps),
               ",".join("%s => %s" % (k, _java_list(v)) for k, v in overlaps.items()), prio))
    stored = {"index_patterns": list(patterns)}
    template_out = {}
    if settings:
        template_out["settings"] = settings
    if mappings:
        template_out["mappings"] = mappings
    if aliases:
        template_out["aliases"] = aliases
    if template_out or "template" in body:
        stored["template"] = template_out
    stored["composed_of"] = list(composed)
    for key in ("priority", "version", "_meta", "data_stream", "allow_auto_create",
                "ignore_missing_component_templates", "deprecated"):
        if key in body and body[key] is not None:
            stored[key] = body[key]
    return stored


def _java_list(items):
    return "[" + ", ".join(items) + "]"


def template_view(stored):
    """The GET _index_template form (settings nested, values as strings)."""
    out = {"index_patterns": stored["index_patterns"]}
    if "template" in stored:
        t = {}
        src = stored["template"]
        if src.get("settings"):
            t["settings"] = nest_settings(src["settings"])
        if src.get("mappings"):
            t["mappings"] = src["mappings"]
        if src.get("aliases"):
            t["aliases"] = src["aliases"]
        out["template"] = t
    for key in ("composed_of", "priority", "version", "_meta", "data_stream",
                "allow_auto_create", "ignore_missing_component_templates", "deprecated"):
        if key in stored:
            out[key] = stored[key]
    return out


def find_template(templates, index_name):
    """MetadataIndexTemplateService.findV2Template: the matching template with
    the highest priority (name, stored) or None."""
    best = None
    for name, t in templates.items():
        if any(glob_match(p, index_name) for p in t["index_patterns"]):
            prio = t.get("priority") or 0
            if best is None or prio > best[0]:
                best = (prio, name, t)
    return (best[1], best[2]) if best else None


# --- ILM -----------------------------------------------------------------------------

_PHASE_ACTIONS = {
    "hot": {"set_priority", "unfollow", "rollover", "readonly", "shrink", "forcemerge",
            "searchable_snapshot", "downsample"},
    "warm": {"set_priority", "unfollow", "readonly", "allocate", "migrate", "shrink",
             "forcemerge", "downsample"},
    "cold": {"set_priority", "unfollow", "readonly", "allocate", "migrate", "freeze",
             "searchable_snapshot", "downsample"},
    "frozen": {"unfollow", "searchable_snapshot"},
    "delete": {"wait_for_snapshot", "delete"},
}


def validate_policy(name, body):
    from es_util import parse_time_ms
    if not isinstance(body, dict):
        raise EsError(400, "x_content_parse_exception", "[1:1] request body is required")
    for key in body:
        if key != "policy":
            raise _unknown_field("put_lifecycle_request", key)
    policy = body.get("policy")
    if not isinstance(policy, dict):
        raise EsError(400, "x_content_parse_exception", "[1:2] Required [policy]")
    for key in policy:
        if key not in ("phases", "_meta"):
            raise _unknown_field("lifecycle_policy", key)
    phases = policy.get("phases")
    if not isinstance(phases, dict):
        raise EsError(400, "x_content_parse_exception", "[1:12] Required [phases]")
    for pname, phase in phases.items():
        if pname not in _PHASE_ACTIONS:
            raise illegal_argument("Timeseries lifecycle does not support phase [%s]" % pname)
        for key in phase:
            if key not in ("min_age", "actions"):
                raise _unknown_field("phase", key)
        if "min_age" in phase:
            parse_time_ms(phase["min_age"], "min_age")
        for action in (phase.get("actions") or {}):
            if action not in set().union(*_PHASE_ACTIONS.values()):
                raise EsError(400, "x_content_parse_exception",
                              "[1:2] [lifecycle_policy] unknown field [%s]" % action)
            if action not in _PHASE_ACTIONS[pname]:
                raise illegal_argument("invalid action [%s] defined in phase [%s]"
                                       % (action, pname))
    return policy


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
