"""coderd/searchquery `Workspaces`: the `q` parameter of GET /workspaces."""

from __future__ import annotations

from fakes.coderd_common import is_uuid, norm_uuid, parse_rfc3339

WORKSPACE_STATUSES = ("pending", "starting", "running", "stopping", "stopped", "failed", "canceling",
                      "canceled", "deleting", "deleted")
KNOWN_KEYS = ("id", "owner", "template", "name", "status", "has-agent", "dormant", "last_used_after",
              "last_used_before", "outdated", "param", "organization", "deleted")


def split_by(query: str, delimiter: str, maintain_quotes: bool) -> list[str]:
    """splitQueryParameterByDelimiter: strings.FieldsFunc that ignores delimiters inside quotes."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in query:
        if ch == '"':
            quoted = not quoted
        if not quoted and ch == delimiter:
            if cur:
                parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if cur:
        parts.append("".join(cur))
    if not maintain_quotes:
        parts = [p.strip('"') for p in parts]
    return parts


def _parse_bool(v: str) -> bool:
    if v in ("1", "t", "true"):
        return True
    if v in ("0", "f", "false"):
        return False
    raise ValueError(v)


def parse_workspace_query(query: str) -> tuple[dict, list[dict]]:
    """Returns (filters, validation errors)."""
    filters: dict = {}
    if not query:
        return filters, []
    query = query.lower()
    values: dict[str, list[str]] = {}
    for element in split_by(query, " ", True):
        if element.startswith(":") or element.endswith(":"):
            return {}, [{"field": "q", "detail": f"Query element \"{element}\" cannot start or end with ':'"}]
        parts = split_by(element, ":", False)
        if len(parts) == 1:
            sub = split_by(element, "/", False)
            if len(sub) == 1:
                values.setdefault("name", []).append(sub[0])
            elif len(sub) == 2:
                values.setdefault("owner", []).append(sub[0])
                values.setdefault("name", []).append(sub[1])
            else:
                return {}, [{"field": "q", "detail": f"Query element \"{element}\" can only contain 1 '/'"}]
        elif len(parts) == 2:
            values.setdefault(parts[0].lower(), []).append(parts[1])
        else:
            return {}, [{"field": "q", "detail": f"Query element \"{element}\" can only contain 1 ':'"}]

    errors: list[dict] = []

    def single(key: str) -> str | None:
        vals = values.get(key)
        if not vals or vals[-1 if False else 0] == "":
            return None
        if len(vals) > 1:
            errors.append({"field": key, "detail": f"Query param \"{key}\" provided more than once, found {len(vals)} times. "
                                                   "Only provide 1 instance of this query param."})
        return vals[0]

    if values.get("id"):
        ids = []
        for chunk in values["id"]:
            for part in chunk.split(","):
                part = part.strip()
                if not part:
                    continue
                if not is_uuid(part):
                    errors.append({"field": "id", "detail": f"Query param \"id\" has invalid uuids: \"{part}\""})
                else:
                    ids.append(norm_uuid(part))
        filters["id"] = set(ids)
    for key in ("owner", "template", "name", "has-agent", "organization"):
        v = single(key)
        if v is not None:
            filters[key] = v
    status = single("status")
    if status is not None:
        if status not in WORKSPACE_STATUSES:
            errors.append({"field": "status", "detail": f"Query param \"status\" has invalid value: \"{status}\" is not a valid "
                                                        "\"workspace_status\""})
        else:
            filters["status"] = status
    for key in ("dormant", "outdated", "deleted"):
        v = single(key)
        if v is not None:
            try:
                filters[key] = _parse_bool(v)
            except ValueError:
                errors.append({"field": key, "detail": f"Query param \"{key}\" must be a valid boolean"})
    for key in ("last_used_after", "last_used_before"):
        v = single(key)
        if v is not None:
            try:
                filters[key] = parse_rfc3339(v.upper() if v.endswith("z") else v.replace("t", "T"))
            except ValueError as exc:
                errors.append({"field": key, "detail": f"Query param \"{key}\" must be a valid date format "
                                                       f"(2006-01-02T15:04:05.999999999Z07:00): {exc}"})
    if values.get("param"):
        filters["param"] = list(values["param"])
    for key in values:
        if key not in KNOWN_KEYS:
            errors.append({"field": key, "detail": f"\"{key}\" is not a valid query param"})
    return filters, errors
