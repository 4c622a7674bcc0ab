//! The OpenAPI 3.1 document, generated from the code: the resources describe themselves
//! through [`Resource`] (their row, create and update types derive `ToSchema`), and the
//! few other endpoints are added here. Served at `/api/v1/openapi.json`, printed by
//! `capliquify openapi`, and committed as `docs/openapi.json` (a test fails when the two
//! differ).

use chrono::{DateTime, NaiveDate, Utc};
use utoipa::ToSchema;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ArrayBuilder, ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi,
    OpenApiBuilder, Paths, Ref, RefOr, Required, ResponseBuilder, Schema, Type,
};
use uuid::Uuid;

use super::audit_logs::AuditPage;
use super::credentials::{NewCredential, NewSecrets};
use super::cursor::MAX_CURSOR_LEN;
use super::error::Problem;
use super::fields::{Field, any_of, nullable};
use super::preferences::{Preferences, PreferencesInput};
use super::resource::{DEFAULT_LIMIT, Kind, MAX_LIMIT, Resource};
use super::resources;
use super::tenant::TenantOverview;
use crate::credentials::Credential;

const JSON: &str = "application/json";
const PROBLEM: &str = "application/problem+json";

/// The whole document.
pub fn document() -> OpenApi {
    let mut api = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("CapLiquify API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The tenant data API. Every request carries a Clerk session token; the tenant is the \
                     token's organization. Errors are RFC 9457 problem documents with a stable `code`.",
                ))
                .build(),
        )
        .paths(Paths::new())
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "clerk",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
                )
                .build(),
        ))
        .security(Some(vec![SecurityRequirement::new("clerk", Vec::<String>::new())]))
        .build();
    add_schema::<Problem>(&mut api);
    add_schema::<TenantOverview>(&mut api);
    let tenant = OperationBuilder::new()
        .tag("tenant")
        .operation_id(Some("getTenant"))
        .summary(Some(
            "The caller's tenant: plan, status, limits, features and usage",
        ))
        .response(
            "200",
            json_response("The tenant", schema_ref::<TenantOverview>()),
        );
    add(&mut api.paths, "/api/v1/tenant", HttpMethod::Get, tenant);
    describe_preferences(&mut api);
    describe_credentials(&mut api);
    add_schema::<AuditPage>(&mut api);
    let audit = OperationBuilder::new()
        .tag("audit")
        .operation_id(Some("listAuditLogs"))
        .summary(Some(
            "The tenant's audit trail, newest first (admins and owners)",
        ))
        .parameters(Some({
            let mut params: Vec<_> = [
                ("action", "Only this action, e.g. scenario.created"),
                ("resource_type", "Only this resource type"),
                ("user", "Only acts of this member (Clerk user id)"),
            ]
            .into_iter()
            .map(|(name, description)| {
                parameter(name, ParameterIn::Query, filter_text(), description)
            })
            .collect();
            let time = || {
                any_of([
                    <NaiveDate as Field>::schema(),
                    <DateTime<Utc> as Field>::schema(),
                ])
            };
            params.push(parameter(
                "from",
                ParameterIn::Query,
                time(),
                "From this time (RFC 3339) or date (its midnight UTC)",
            ));
            params.push(parameter(
                "to",
                ParameterIn::Query,
                time(),
                "Before this time (RFC 3339) or date (its midnight UTC)",
            ));
            params.extend(list_parameters(None, ""));
            params
        }))
        .response(
            "200",
            json_response("A page of audit entries", schema_ref::<AuditPage>()),
        );
    add(&mut api.paths, "/api/v1/audit-logs", HttpMethod::Get, audit);
    resources::describe(&mut api);
    describe_working_capital(&mut api);
    describe_what_if(&mut api);
    describe_forecasting(&mut api);
    describe_imports(&mut api);
    api
}

/// Data import (src/http/imports.rs, src/import).
fn describe_imports(api: &mut OpenApi) {
    use crate::import::{ColumnUse, DateOrder, ImportRecord, Rejection, Report, Table};
    use utoipa::openapi::schema::{AllOfBuilder, SchemaFormat};
    add_schema::<Rejection>(api);
    add_schema::<ColumnUse>(api);
    add_schema::<Report>(api);
    add_schema::<ImportRecord>(api);
    let rejected = AllOfBuilder::new()
        .item(schema_ref::<Problem>())
        .item(
            ObjectBuilder::new()
                .property("import", schema_ref::<Report>())
                .required("import"),
        )
        .description(Some(
            "A refused file (code `import_rejected`): the problem and the import's report, listing every rejected row (the first 1,000 problems)",
        ))
        .build();
    api.components
        .get_or_insert_with(Default::default)
        .schemas
        .insert("ImportRejected".into(), RefOr::T(Schema::AllOf(rejected)));
    let tables = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Table::ALL.iter().map(|t| t.as_str())))
    };
    let boolean = || {
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .default(Some(false.into()))
    };
    // A column name or field: no `,` or `=` (they separate pairs), not blank.
    let part = "[^,=\\u0000]*[^,=\\s\\u0000][^,=\\u0000]*";
    let params = vec![
        ParameterBuilder::new()
            .name("table")
            .parameter_in(ParameterIn::Query)
            .required(Required::True)
            .schema(Some(tables()))
            .description(Some("The table the rows go into"))
            .build(),
        parameter(
            "sheet",
            ParameterIn::Query,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[^\\u0000]*$"))
                .into(),
            "A spreadsheet's sheet (default the first)",
        ),
        parameter(
            "mapping",
            ParameterIn::Query,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(4096))
                .pattern(Some(format!("^{part}={part}(,{part}={part})*$")))
                .into(),
            "`file column=field,…`: overrides the automatic mapping (a field of `-` ignores the column)",
        ),
        parameter(
            "dry_run",
            ParameterIn::Query,
            boolean().into(),
            "Validate and count; write nothing",
        ),
        parameter(
            "skip_invalid",
            ParameterIn::Query,
            boolean().into(),
            "Import the valid rows and list the rejected ones (default: any rejected row refuses the file)",
        ),
        parameter(
            "date_format",
            ParameterIn::Query,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(DateOrder::WORDS))
                .default(Some("auto".into()))
                .into(),
            "How to read dates such as 03/04/2026; `auto` rejects them as ambiguous when both parts are 12 or less",
        ),
        parameter(
            "decimal_separator",
            ParameterIn::Query,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([".", ","]))
                .default(Some(".".into()))
                .into(),
            "The decimal mark of the file's numbers (the other mark may group thousands)",
        ),
        parameter(
            "company_id",
            ParameterIn::Query,
            <Uuid as Field>::schema(),
            "The company of every row that names none (with a single company, that one)",
        ),
    ];
    let text = ObjectBuilder::new().schema_type(Type::String);
    let binary = || {
        ContentBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::Custom("binary".into()))),
            ))
            .build()
    };
    let body = RequestBodyBuilder::new()
        .content("text/csv", ContentBuilder::new().schema(Some(text)).build())
        .content(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            binary(),
        )
        .content("application/vnd.ms-excel", binary())
        .content("application/vnd.oasis.opendocument.spreadsheet", binary())
        .required(Some(Required::True))
        .build();
    let op = |id: &str, summary: &str| {
        OperationBuilder::new()
            .tag("imports")
            .operation_id(Some(id))
            .summary(Some(summary))
    };
    add(
        &mut api.paths,
        "/api/v1/imports",
        HttpMethod::Post,
        op(
            "createImport",
            "Import a CSV or spreadsheet into a table: validated whole, upserted by natural key, all or nothing (members)",
        )
        .parameters(Some(params))
        .request_body(Some(body))
        .response("201", json_response("Imported; `Location` is the history entry", schema_ref::<Report>()))
        .response("200", json_response("A dry run: what the import would do; nothing written", schema_ref::<Report>()))
        .response("413", problem_response("The body is larger than CAPLIQUIFY_MAX_IMPORT_BYTES"))
        .response("415", problem_response("The body is neither CSV nor a spreadsheet"))
        .response(
            "422",
            ResponseBuilder::new()
                .description("The file was refused (`import_rejected`, with the report), or company_id names no company (`reference_not_found`); nothing written")
                .content(
                    PROBLEM,
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(Ref::from_schema_name("ImportRejected"))))
                        .build(),
                )
                .build(),
        ),
    );
    add(
        &mut api.paths,
        "/api/v1/imports",
        HttpMethod::Get,
        op("listImports", "The tenant's imports, newest first")
            .parameters(Some(list_parameters(None, "")))
            .response(
                "200",
                json_response(
                    "A page of imports",
                    page_schema(schema_ref::<ImportRecord>()),
                ),
            ),
    );
    add(
        &mut api.paths,
        "/api/v1/imports/{id}",
        HttpMethod::Get,
        op(
            "getImport",
            "One import: counts, mapping, and the rows it skipped",
        )
        .parameters(Some(vec![parameter(
            "id",
            ParameterIn::Path,
            <Uuid as Field>::schema(),
            "The import's id (UUID)",
        )]))
        .response(
            "200",
            json_response("The import", schema_ref::<ImportRecord>()),
        )
        .response("404", problem_response("No such import in this tenant")),
    );
    add(
        &mut api.paths,
        "/api/v1/imports/templates/{table}.csv",
        HttpMethod::Get,
        op(
            "getImportTemplate",
            "A table's CSV template: the header row and one example row",
        )
        .parameters(Some(vec![parameter(
            "table",
            ParameterIn::Path,
            tables().into(),
            "The table",
        )]))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The template")
                .content(
                    "text/csv",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                )
                .build(),
        )
        .response(
            "404",
            problem_response("No template: not a table imports take"),
        ),
    );
}

/// Forecast generation (src/http/forecasting.rs).
fn describe_forecasting(api: &mut OpenApi) {
    use super::forecasting::{GenerateRequest, GenerateResponse, ProductRun};
    add_schema::<GenerateRequest>(api);
    add_schema::<ProductRun>(api);
    add_schema::<GenerateResponse>(api);
    add(
        &mut api.paths,
        "/api/v1/forecasts/generate",
        HttpMethod::Post,
        OperationBuilder::new()
            .tag("forecasts")
            .operation_id(Some("generateForecasts"))
            .summary(Some(
                "Forecast products' demand or revenue from their sales history, replacing their previous run (members; plan feature ai_forecasting)",
            ))
            .request_body(json_body(schema_ref::<GenerateRequest>()))
            .response(
                "200",
                json_response("One run per product with its stored rows", schema_ref::<GenerateResponse>()),
            ),
    );
}

/// Scenario runs and presets (src/http/what_if.rs).
fn describe_what_if(api: &mut OpenApi) {
    use super::what_if::{NewScenarioFromPreset, PresetList, RunRequest};
    use crate::domain::scenarios::{Preset, presets};
    add_schema::<RunRequest>(api);
    add_schema::<Preset>(api);
    add_schema::<PresetList>(api);
    add_schema::<NewScenarioFromPreset>(api);
    let op = |id: &str, summary: &str| {
        OperationBuilder::new()
            .tag("scenarios")
            .operation_id(Some(id))
            .summary(Some(summary))
    };
    let scenario = || schema_ref::<super::resources::scenarios::Scenario>();
    let id = parameter(
        "id",
        ParameterIn::Path,
        <Uuid as Field>::schema(),
        "The scenario's id (UUID)",
    );
    let run_body = RequestBodyBuilder::new()
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(schema_ref::<RunRequest>()))
                .build(),
        )
        .required(Some(Required::False))
        .build();
    add(
        &mut api.paths,
        "/api/v1/scenarios/{id}/run",
        HttpMethod::Post,
        op(
            "runScenario",
            "Evaluate the scenario's parameters against its company's latest (or a stated) period and store the results (members; plan feature what_if)",
        )
        .parameters(Some(vec![id]))
        .request_body(Some(run_body))
        .response("200", json_response("The scenario with its results", scenario()))
        .response("404", problem_response("No such scenario in this tenant")),
    );
    add(
        &mut api.paths,
        "/api/v1/scenarios/presets",
        HttpMethod::Get,
        op(
            "listScenarioPresets",
            "The ready scenarios and their parameters",
        )
        .response(
            "200",
            json_response("The presets", schema_ref::<PresetList>()),
        ),
    );
    let keys: Vec<String> = presets().iter().map(|p| p.key.to_owned()).collect();
    let preset = parameter(
        "preset",
        ParameterIn::Path,
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(keys))
                .build(),
        )),
        "Which preset",
    );
    add(
        &mut api.paths,
        "/api/v1/scenarios/presets/{preset}",
        HttpMethod::Post,
        op(
            "createScenarioFromPreset",
            "Create a scenario from a preset (members; plan feature what_if)",
        )
        .parameters(Some(vec![preset]))
        .request_body(json_body(schema_ref::<NewScenarioFromPreset>()))
        .response("201", json_response("Created", scenario()))
        .response("404", problem_response("No such preset")),
    );
}

/// The working-capital engine's endpoints (src/http/working_capital.rs).
fn describe_working_capital(api: &mut OpenApi) {
    use super::working_capital::{ComputeRequest, ComputedMetrics, WorkingCapitalSummary};
    add_schema::<ComputeRequest>(api);
    add_schema::<ComputedMetrics>(api);
    add_schema::<WorkingCapitalSummary>(api);
    let op = |id: &str, summary: &str| {
        OperationBuilder::new()
            .tag("working-capital")
            .operation_id(Some(id))
            .summary(Some(summary))
    };
    add(
        &mut api.paths,
        "/api/v1/working-capital-metrics/compute",
        HttpMethod::Post,
        op(
            "computeWorkingCapitalMetrics",
            "Compute and store a period's metrics from the tenant's sales, products and inventory (members)",
        )
        .request_body(json_body(schema_ref::<ComputeRequest>()))
        .response(
            "200",
            json_response("The stored period with its status bands", schema_ref::<ComputedMetrics>()),
        ),
    );
    let company = ParameterBuilder::new()
        .name("company_id")
        .parameter_in(ParameterIn::Query)
        .required(Required::True)
        .schema(Some(<Uuid as Field>::schema()))
        .description(Some("The company (UUID)"))
        .build();
    let period_type = parameter(
        "period_type",
        ParameterIn::Query,
        schema_ref::<crate::domain::working_capital::PeriodType>(),
        "Which periods; default: the type of the latest stored period",
    );
    add(
        &mut api.paths,
        "/api/v1/working-capital/summary",
        HttpMethod::Get,
        op(
            "getWorkingCapitalSummary",
            "The latest period, the trend over the last 12 periods and the cash runway",
        )
        .parameters(Some(vec![company, period_type]))
        .response(
            "200",
            json_response("The summary", schema_ref::<WorkingCapitalSummary>()),
        )
        .response("404", problem_response("No such company in this tenant")),
    );
}

fn describe_credentials(api: &mut OpenApi) {
    add_schema::<Credential>(api);
    add_schema::<NewCredential>(api);
    add_schema::<NewSecrets>(api);
    let id = || {
        vec![parameter(
            "id",
            ParameterIn::Path,
            <Uuid as Field>::schema(),
            "The credential's id (UUID)",
        )]
    };
    let op = |op_id: &str, summary: &str| {
        OperationBuilder::new()
            .tag("api-credentials")
            .operation_id(Some(op_id))
            .summary(Some(summary))
    };
    let one = || {
        json_response(
            "The credential (never its secrets)",
            schema_ref::<Credential>(),
        )
    };
    let list = RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .property(
                "data",
                ArrayBuilder::new().items(schema_ref::<Credential>()),
            )
            .required("data")
            .build(),
    ));
    let missing = || problem_response("No such credential in this tenant");
    let base = "/api/v1/api-credentials";
    let item = "/api/v1/api-credentials/{id}";
    let paths = &mut api.paths;
    add(
        paths,
        base,
        HttpMethod::Get,
        op("listApiCredentials", "List credentials (admins)")
            .response("200", json_response("All credentials", list)),
    );
    add(
        paths,
        base,
        HttpMethod::Post,
        op("createApiCredential", "Store a credential, sealed (admins)")
            .request_body(json_body(schema_ref::<NewCredential>()))
            .response("201", one())
            .response(
                "409",
                problem_response("This company already has a credential for the service"),
            ),
    );
    add(
        paths,
        item,
        HttpMethod::Get,
        op("getApiCredential", "One credential (admins)")
            .parameters(Some(id()))
            .response("200", one())
            .response("404", missing()),
    );
    add(
        paths,
        item,
        HttpMethod::Delete,
        op("deleteApiCredential", "Delete a credential (admins)")
            .parameters(Some(id()))
            .response("204", ResponseBuilder::new().description("Deleted").build())
            .response("404", missing()),
    );
    add(
        paths,
        format!("{item}/rotate"),
        HttpMethod::Post,
        op("rotateApiCredential", "Replace the secrets (admins)")
            .parameters(Some(id()))
            .request_body(json_body(schema_ref::<NewSecrets>()))
            .response("200", one())
            .response("404", missing()),
    );
    add(
        paths,
        format!("{item}/deactivate"),
        HttpMethod::Post,
        op(
            "deactivateApiCredential",
            "Stop using a credential (admins)",
        )
        .parameters(Some(id()))
        .response("200", one())
        .response("404", missing()),
    );
}

fn describe_preferences(api: &mut OpenApi) {
    add_schema::<Preferences>(api);
    add_schema::<PreferencesInput>(api);
    let user_id = || {
        parameter(
            "user_id",
            ParameterIn::Path,
            <super::preferences::ClerkUserId as Field>::schema(),
            "The member's Clerk user id",
        )
    };
    let op = |id: &str, summary: &str| {
        OperationBuilder::new()
            .tag("preferences")
            .operation_id(Some(id))
            .summary(Some(summary))
    };
    let found = || {
        json_response(
            "The preferences ({} until first saved)",
            schema_ref::<Preferences>(),
        )
    };
    let deleted = || ResponseBuilder::new().description("Removed").build();
    let mine = "/api/v1/me/preferences";
    let member = "/api/v1/user-preferences/{user_id}";
    let paths = &mut api.paths;
    add(
        paths,
        mine,
        HttpMethod::Get,
        op("getMyPreferences", "The caller's preferences").response("200", found()),
    );
    add(
        paths,
        mine,
        HttpMethod::Put,
        op("putMyPreferences", "Replace the caller's preferences")
            .request_body(json_body(schema_ref::<PreferencesInput>()))
            .response("200", found()),
    );
    add(
        paths,
        mine,
        HttpMethod::Patch,
        op(
            "patchMyPreferences",
            "Merge keys into the caller's preferences",
        )
        .request_body(json_body(schema_ref::<PreferencesInput>()))
        .response("200", found()),
    );
    add(
        paths,
        mine,
        HttpMethod::Delete,
        op("deleteMyPreferences", "Reset the caller's preferences").response("204", deleted()),
    );
    let not_member = || problem_response("No such member in this tenant");
    add(
        paths,
        member,
        HttpMethod::Get,
        op("getMemberPreferences", "A member's preferences (admins)")
            .parameters(Some(vec![user_id()]))
            .response("200", found())
            .response("404", not_member()),
    );
    add(
        paths,
        member,
        HttpMethod::Put,
        op(
            "putMemberPreferences",
            "Replace a member's preferences (admins)",
        )
        .parameters(Some(vec![user_id()]))
        .request_body(json_body(schema_ref::<PreferencesInput>()))
        .response("200", found())
        .response("404", not_member()),
    );
    add(
        paths,
        member,
        HttpMethod::Delete,
        op(
            "deleteMemberPreferences",
            "Reset a member's preferences (admins)",
        )
        .parameters(Some(vec![user_id()]))
        .response("204", deleted())
        .response("404", not_member()),
    );
}

/// The document as pretty JSON with a final newline (the committed file's form).
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

fn add_schema<T: ToSchema>(api: &mut OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    for (name, schema) in nested {
        components.schemas.insert(name, schema);
    }
    components
        .schemas
        .insert(T::name().into_owned(), T::schema());
}

fn schema_ref<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

fn json_response(description: &str, schema: RefOr<Schema>) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(JSON, ContentBuilder::new().schema(Some(schema)).build())
        .build()
}

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM,
            ContentBuilder::new()
                .schema(Some(schema_ref::<Problem>()))
                .build(),
        )
        .build()
}

/// Adds `op` for `method` on `path`, with the error answers every operation may give.
fn add(paths: &mut Paths, path: impl AsRef<str>, method: HttpMethod, op: OperationBuilder) {
    paths.add_path_operation(path, vec![method], with_problems(op));
}

/// A required JSON request body of `schema`.
fn json_body(schema: RefOr<Schema>) -> Option<utoipa::openapi::request_body::RequestBody> {
    Some(
        RequestBodyBuilder::new()
            .content(JSON, ContentBuilder::new().schema(Some(schema)).build())
            .required(Some(Required::True))
            .build(),
    )
}

/// The error answers every authenticated operation may give.
fn with_problems(op: OperationBuilder) -> OperationBuilder {
    op.response("400", problem_response("Malformed request (JSON, parameter, cursor or id)"))
        .response("401", problem_response("Missing, expired or forged token"))
        .response("402", problem_response("Trial ended or subscription cancelled (writes only)"))
        .response("403", problem_response("Unknown organization, not a member, tenant suspended or deleted, role or plan does not allow it"))
        .response("422", problem_response("Invalid field; `field` names it"))
}

fn parameter(
    name: &str,
    location: ParameterIn,
    schema: RefOr<Schema>,
    description: &str,
) -> utoipa::openapi::path::Parameter {
    let required = if location == ParameterIn::Path {
        Required::True
    } else {
        Required::False
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(required)
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// A text filter value: up to 255 characters, no NUL (PostgreSQL text cannot hold one).
fn filter_text() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(255))
        .pattern(Some("^[^\\u0000]*$"))
        .into()
}

/// A pagination cursor: opaque, as the server issued it in `next_cursor`.
fn cursor_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_CURSOR_LEN))
        .pattern(Some("^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$"))
        .into()
}

/// `limit`, `cursor` and (when given) `sort`: the parameters of every list.
fn list_parameters(
    sort: Option<RefOr<Schema>>,
    sort_description: &str,
) -> Vec<utoipa::openapi::path::Parameter> {
    let mut params = vec![
        parameter(
            "limit",
            ParameterIn::Query,
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_LIMIT))
                .default(Some(DEFAULT_LIMIT.into()))
                .into(),
            &format!(
                "Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}); a page also ends after about 1 MiB of rows"
            ),
        ),
        parameter(
            "cursor",
            ParameterIn::Query,
            cursor_schema(),
            "`next_cursor` of the previous page, unchanged",
        ),
    ];
    if let Some(sort) = sort {
        params.push(parameter(
            "sort",
            ParameterIn::Query,
            sort,
            sort_description,
        ));
    }
    params
}

/// The one shape of a paginated response.
fn page_schema(row: RefOr<Schema>) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .property("data", ArrayBuilder::new().items(row))
            .required("data")
            .property("next_cursor", nullable(cursor_schema()))
            .required("next_cursor")
            .description(Some(
                "A page of rows; `next_cursor` is null on the last page",
            ))
            .build(),
    ))
}

/// Adds `R`'s five operations and its schemas.
pub fn describe<R: Resource>(api: &mut OpenApi) {
    add_schema::<R::Row>(api);
    add_schema::<R::Create>(api);
    add_schema::<R::Update>(api);
    let tag = R::PATH;
    let collection = format!("/api/v1/{}", R::PATH);
    let item = format!("/api/v1/{}/{{id}}", R::PATH);
    let id = || {
        parameter(
            "id",
            ParameterIn::Path,
            <Uuid as Field>::schema(),
            &format!("The {}'s id (UUID)", R::NAME),
        )
    };

    let sorts: Vec<String> = R::SORTS
        .iter()
        .flat_map(|s| [s.param.to_owned(), format!("-{}", s.param)])
        .collect();
    let mut params = list_parameters(
        Some(RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(sorts.iter().map(String::as_str)))
                .build(),
        ))),
        &format!(
            "Sort order (prefix - for descending); default {}",
            R::SORTS[0].param
        ),
    );
    for filter in R::FILTERS {
        let schema = match filter.kind {
            Kind::Text => filter_text(),
            Kind::Bool => <bool as Field>::schema(),
            Kind::Uuid => <Uuid as Field>::schema(),
            Kind::Date => <NaiveDate as Field>::schema(),
        };
        params.push(parameter(
            filter.param,
            ParameterIn::Query,
            schema,
            &format!("Filter on {}", filter.column),
        ));
    }
    let page = page_schema(schema_ref::<R::Row>());
    let op = |verb: &str, summary: String| {
        OperationBuilder::new()
            .tag(tag)
            .operation_id(Some(format!("{verb}_{}", R::PATH.replace('-', "_"))))
            .summary(Some(summary))
    };
    let paths = &mut api.paths;
    add(
        paths,
        &collection,
        HttpMethod::Get,
        op("list", format!("List {}", R::PATH))
            .parameters(Some(params))
            .response("200", json_response("A page", page)),
    );
    add(
        paths,
        &collection,
        HttpMethod::Post,
        op("create", format!("Create a {}", R::NAME))
            .request_body(json_body(schema_ref::<R::Create>()))
            .response("201", json_response("Created", schema_ref::<R::Row>()))
            .response("409", problem_response("A unique field is already taken")),
    );
    add(
        paths,
        &item,
        HttpMethod::Get,
        op("get", format!("Get a {}", R::NAME))
            .parameters(Some(vec![id()]))
            .response("200", json_response("Found", schema_ref::<R::Row>()))
            .response("404", problem_response("No such row in this tenant")),
    );
    add(
        paths,
        &item,
        HttpMethod::Patch,
        op("update", format!("Change fields of a {}", R::NAME))
            .parameters(Some(vec![id()]))
            .request_body(json_body(schema_ref::<R::Update>()))
            .response("200", json_response("Changed", schema_ref::<R::Row>()))
            .response("404", problem_response("No such row in this tenant"))
            .response("409", problem_response("A unique field is already taken")),
    );
    add(
        paths,
        &item,
        HttpMethod::Delete,
        op("delete", format!("Delete a {}", R::NAME))
            .parameters(Some(vec![id()]))
            .response("204", ResponseBuilder::new().description("Deleted").build())
            .response("404", problem_response("No such row in this tenant")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::fields::DATE_PATTERN;

    /// Every `format: date` schema in the document, with its path in the document.
    fn date_schemas<'a>(
        at: String,
        value: &'a serde_json::Value,
        found: &mut Vec<(String, &'a serde_json::Value)>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("format").and_then(|f| f.as_str()) == Some("date") {
                    found.push((at.clone(), value));
                }
                for (key, child) in map {
                    date_schemas(format!("{at}/{key}"), child, found);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    date_schemas(format!("{at}/{i}"), child, found);
                }
            }
            _ => {}
        }
    }

    /// A date field written with a `#[schema(pattern = "…")]` literal must carry the same
    /// pattern as [`crate::http::fields::Day`]: a looser one (`[0-9]{2}` for the month) makes
    /// fuzzers and generated clients draw mostly impossible dates. (Dates the server only
    /// returns, such as `NaiveDate` fields of responses, carry no pattern.)
    #[test]
    fn every_date_in_the_document_carries_the_day_pattern() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        let mut found = Vec::new();
        date_schemas(String::new(), &doc, &mut found);
        found.retain(|(_, schema)| schema.get("pattern").is_some());
        assert!(
            found.len() > 3,
            "expected the document's date fields, found {found:?}"
        );
        for (at, schema) in found {
            assert_eq!(
                schema["pattern"].as_str(),
                Some(DATE_PATTERN),
                "{at}: a date schema without Day's pattern"
            );
        }
    }
}
