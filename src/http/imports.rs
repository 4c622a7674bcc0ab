//! `/api/v1/imports`: a CSV or spreadsheet body into one tenant table (members and up),
//! the history of imports, and each table's template. A thin handler over
//! [`crate::import`]: parameters parsed here, the whole import in the caller's tenant
//! transaction, committed only when the import says `imported`.

use axum::body::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::context::Caller;
use super::cursor::Position;
use super::error::ApiError;
use super::extract::{Id, PageWriter};
use super::resource::{DEFAULT_LIMIT, MAX_LIMIT, query_pairs};
use crate::access::Act;
use crate::import::{self, DateOrder, DecimalSeparator, Format, ImportError, Options, Table};

/// The routes of imports. `POST /imports` reads its body as a stream, up to the
/// configured `max_import_bytes` (its own limit, not the API's `max_body_bytes`).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/imports", post(create).get(list))
        .route("/imports/{id}", get(show))
        .route("/imports/templates/{file}", get(template))
}

fn bad(name: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_parameter", message).with_field(name)
}

fn flag(name: &'static str, value: &str) -> Result<bool, ApiError> {
    value
        .parse()
        .map_err(|_| bad(name, format!("{name} must be true or false")))
}

/// The query of `POST /imports` into options.
fn options(pairs: Vec<(String, String)>) -> Result<Options, ApiError> {
    let mut table = None;
    let mut rest = Vec::new();
    for (key, value) in pairs {
        if key == "table" {
            table = Some(Table::parse(&value).ok_or_else(|| {
                let words: Vec<_> = Table::ALL.iter().map(|t| t.as_str()).collect();
                bad(
                    "table",
                    format!("table must be one of {}", words.join(", ")),
                )
            })?);
        } else {
            rest.push((key, value));
        }
    }
    let table = table.ok_or_else(|| {
        bad(
            "table",
            "table is required: products, inventory, sales, working-capital-metrics or companies",
        )
    })?;
    let mut o = Options::new(table);
    for (key, value) in rest {
        match key.as_str() {
            "sheet" => {
                if value.is_empty() || value.chars().count() > 255 {
                    return Err(bad("sheet", "sheet must be 1 to 255 characters"));
                }
                o.sheet = Some(value);
            }
            "mapping" => {
                if value.chars().count() > 4096 {
                    return Err(bad("mapping", "mapping must be at most 4096 characters"));
                }
                o.mapping = import::parse_mapping(&value).map_err(|e| {
                    bad("mapping", format!("mapping must be `column=field,…`: {e}"))
                })?;
            }
            "dry_run" => o.dry_run = flag("dry_run", &value)?,
            "skip_invalid" => o.skip_invalid = flag("skip_invalid", &value)?,
            "date_format" => {
                o.date_order = DateOrder::parse(&value).ok_or_else(|| {
                    bad(
                        "date_format",
                        format!("date_format must be one of {}", DateOrder::WORDS.join(", ")),
                    )
                })?;
            }
            "decimal_separator" => {
                o.decimal_separator = DecimalSeparator::parse(&value)
                    .ok_or_else(|| bad("decimal_separator", "decimal_separator must be . or ,"))?;
            }
            "company_id" => {
                o.company_id = Some(
                    Some(value.as_str())
                        .filter(|v| v.len() == 36)
                        .and_then(|v| Uuid::try_parse(v).ok())
                        .ok_or_else(|| bad("company_id", "company_id must be a UUID"))?,
                );
            }
            other => {
                return Err(bad("query", format!("unknown query parameter {other:?}"))
                    .with_field(other.to_owned()));
            }
        }
    }
    Ok(o)
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("an import body may be at most {max} bytes (CAPLIQUIFY_MAX_IMPORT_BYTES)"),
    )
}

/// `POST /api/v1/imports`
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(Act::WriteData)?;
    let max = state.config.max_import_bytes;
    // Refused before a byte of the body is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let options = options(query_pairs(query)?)?;
    let format = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_media_type)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be text/csv or a spreadsheet (application/vnd.openxmlformats-officedocument.spreadsheetml.sheet, application/vnd.ms-excel, application/vnd.oasis.opendocument.spreadsheet)",
            )
        })?;
    let too_big = Arc::new(AtomicBool::new(false));
    let body = body_reader(request.into_body(), max, too_big.clone());
    let who = import::Who {
        actor: caller.actor(),
        clerk_user_id: Some(caller.member.clerk_user_id.clone()),
    };
    let limits = import::Limits {
        max_entities: caller.tenant.max_entities,
    };
    let mut tx = state.begin(&caller).await?;
    let result = import::run(
        &mut tx,
        &caller.tenant.scope,
        &who,
        limits,
        import::Source {
            input: Box::new(body),
            format,
        },
        &options,
        None,
    )
    .await;
    match result {
        Ok(report) if report.status == "imported" => {
            tx.commit().await?;
            let location = report
                .id
                .map(|id| format!("/api/v1/imports/{id}"))
                .unwrap_or_default();
            let mut response = (StatusCode::CREATED, axum::Json(report)).into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
        Ok(report) => {
            tx.rollback().await?;
            Ok((StatusCode::OK, axum::Json(report)).into_response())
        }
        Err(err) => {
            tx.rollback().await?;
            if too_big.load(Ordering::SeqCst) {
                return Err(too_large(max));
            }
            Err(refusal(err))
        }
    }
}

/// The request body as a blocking reader for the import's validation thread: its chunks
/// arrive over a channel as the client sends them, so the body is never held whole. Past
/// `max` bytes the reader fails and `too_big` is set (a body without `Content-Length`).
struct BodyReader {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

fn body_reader(body: axum::body::Body, max: usize, too_big: Arc<AtomicBool>) -> BodyReader {
    use futures_util::StreamExt as _;
    let (sender, chunks) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    total += bytes.len();
                    if total > max {
                        too_big.store(true, Ordering::SeqCst);
                        Err(std::io::Error::other(
                            "the body is larger than CAPLIQUIFY_MAX_IMPORT_BYTES",
                        ))
                    } else {
                        Ok(bytes)
                    }
                }
                Err(e) => Err(std::io::Error::other(format!(
                    "the body could not be read: {e}"
                ))),
            };
            let stop = item.is_err();
            if sender.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    BodyReader {
        chunks,
        current: Bytes::new(),
    }
}

/// An import's refusal as an answer. A refused file is a problem document that also
/// carries the report (`import`): every rejected row with its line, column, value and
/// reason.
fn refusal(err: ImportError) -> ApiError {
    match err {
        ImportError::Rule { name, message } => ApiError::rule(name, message),
        ImportError::Reference { name, message } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reference_not_found",
            message,
        )
        .with_field(name),
        ImportError::PlanLimit(message) => ApiError::forbidden("plan_limit_reached", message),
        ImportError::Rejected { detail, report } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected", detail)
                .with_extension("import", json!(report))
        }
        ImportError::Database(err) => err.into(),
    }
}

/// `GET /api/v1/imports`: the history, newest first.
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Act::ReadData)?;
    const SORT: &str = "-created_at";
    let mut limit = DEFAULT_LIMIT;
    let mut after = None;
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "limit" => {
                limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        bad(
                            "limit",
                            format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            "cursor" => {
                let position = state.cursors.decode(&value, SORT)?;
                let at = DateTime::parse_from_rfc3339(&position.key)
                    .map_err(|_| {
                        ApiError::bad_request(
                            "invalid_cursor",
                            "the cursor is not one this API issued",
                        )
                        .with_field("cursor")
                    })?
                    .with_timezone(&Utc);
                after = Some((at, position.id));
            }
            other => {
                return Err(bad("query", format!("unknown query parameter {other:?}"))
                    .with_field(other.to_owned()));
            }
        }
    }
    let mut tx = state.begin(&caller).await?;
    let rows = import::list(&mut tx, limit + 1, after).await?;
    tx.commit().await?;
    let mut page = PageWriter::new();
    let mut last = None;
    let mut more = false;
    for row in &rows {
        if page.rows() as i64 == limit || page.is_full() {
            more = true;
            break;
        }
        page.push(row)?;
        last = Some(Position {
            sort: SORT.into(),
            key: row
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            id: row.id,
        });
    }
    let next = last
        .filter(|_| more)
        .map(|position| state.cursors.encode(&position));
    Ok(page.finish(next))
}

/// `GET /api/v1/imports/{id}`
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<axum::Json<import::ImportRecord>, ApiError> {
    caller.require(Act::ReadData)?;
    let mut tx = state.begin(&caller).await?;
    let row = import::get(&mut tx, id).await?;
    tx.commit().await?;
    row.map(axum::Json)
        .ok_or_else(|| ApiError::not_found("import"))
}

/// `GET /api/v1/imports/templates/{table}.csv`: the header row and one example.
async fn template(caller: Caller, Path(file): Path<String>) -> Result<Response, ApiError> {
    caller.require(Act::ReadData)?;
    let table = file
        .strip_suffix(".csv")
        .and_then(Table::parse)
        .ok_or_else(|| ApiError::not_found("template"))?;
    let disposition = format!("attachment; filename=\"{}.csv\"", table.as_str());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        import::spec::template(table),
    )
        .into_response())
}
