"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

`positive_data_acceptance_with_rules` replaces the built-in `positive_data_acceptance`
check (excluded by name in the script), keeping its rule — a request valid under the
document must be accepted — with four exceptions JSON Schema cannot express, each
recognised by the problem document's stable `code`, never by status alone:

- 422 `reference_not_found`: a body names a row (company_id, product_id …) that does
  not exist in the tenant. Any UUID is schema-valid; only the database knows the rows.
- 422 `rule_violated`: a rule between two fields, or between a new value and the stored
  row (quantity_reserved <= quantity_on_hand, lower_bound <= predicted_value, a computed
  total that overflows its column).
- 400 `invalid_cursor`: a pagination cursor is opaque and signed; any other string of the
  cursor's alphabet is schema-valid and still not one the server issued.
- 422 `import_rejected`: an import's body is any text (CSV) or bytes (spreadsheet); only
  reading it tells whether its header names the table's fields and its rows are valid
  (and whether `mapping` and `sheet` name its columns and sheets).

Every other 4xx to a schema-valid request fails the run, as the built-in check would.
"""

import json

import schemathesis
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

ACCEPTED_STATUSES = {401, 403, 404, 409, 429}
SEMANTIC = {
    (422, "reference_not_found"),
    (422, "rule_violated"),
    (400, "invalid_cursor"),
    (422, "import_rejected"),
}


@schemathesis.check
def positive_data_acceptance_with_rules(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if is_unexpected_http_status_case(case):
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in ACCEPTED_STATUSES:
        return None
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        code = None
    if (status, code) in SEMANTIC:
        return None
    raise AssertionError(
        f"A schema-valid request was rejected with {status} {code!r}; only "
        + ", ".join(f"{s} {c}" for s, c in sorted(SEMANTIC))
        + " may answer one (rules the document cannot state)"
    )
