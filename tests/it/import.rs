//! Data import through `POST /api/v1/imports` against the real server and PostgreSQL: each
//! table, each kind of bad row, all-or-nothing, re-import, plan limits and roles, the
//! history and its audit rows, templates, spreadsheets, the body limit and a 100k-row file.

use capliquify::access::Role;
use capliquify::billing::Tier;
use capliquify::http::HttpConfig;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::common::api::{Reply, TestApp, TestTenant};

const CSV: &str = "text/csv";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

async fn send(app: &TestApp, token: &str, query: &str, media: &str, body: Vec<u8>) -> Reply {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/imports?{query}")))
        .bearer_auth(token)
        .header("content-type", media)
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

async fn import(app: &TestApp, t: &TestTenant, query: &str, csv: &str) -> Reply {
    let token = app.token_for(t, Role::Member);
    send(app, &token, query, CSV, csv.as_bytes().to_vec()).await
}

#[track_caller]
fn counts(reply: &Reply) -> [u64; 4] {
    let b = if reply.body.get("import").is_some() {
        &reply.body["import"]
    } else {
        &reply.body
    };
    ["inserted", "updated", "unchanged", "rejected"].map(|k| {
        b[k].as_u64()
            .unwrap_or_else(|| panic!("{k} in {}", reply.text))
    })
}

async fn scalar(app: &TestApp, t: &TestTenant, sql: &str) -> i64 {
    app.db
        .scalar_i64(&sql.replace("{s}", &t.tenant.schema_name))
        .await
}

const PRODUCTS: &str = "\
Item code,Product Name,Unit Price,Cost,Category,Notes
GABA-RED-500,GABA Red 500ml,$24.99,8.40,spirits,first
GABA-GOLD-500,GABA Gold 500ml,\"1,029.00\",12.00,spirits,
GABA-BLK-700,GABA Black 700ml,31.50,,spirits,x
";

#[tokio::test]
async fn products_import_by_alias_and_a_second_import_changes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("imp-products", Tier::Professional).await;
    app.company(&t, "Acme").await;

    let first = import(&app, &t, "table=products", PRODUCTS).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(counts(&first), [3, 0, 0, 0]);
    assert_eq!(first.body["status"], "imported");
    assert_eq!(first.body["ignored_columns"], serde_json::json!(["Notes"]));
    let id = first.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        first.headers.get("location").unwrap(),
        &format!("/api/v1/imports/{id}")
    );
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT count(*) FROM {s}.products WHERE unit_price = 1029.00"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT count(*) FROM {s}.products WHERE unit_cost IS NULL"
        )
        .await,
        1
    );

    let again = import(&app, &t, "table=products", PRODUCTS).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(counts(&again), [0, 0, 3, 0]);
    assert!(
        again.body["summary"]
            .as_str()
            .unwrap()
            .starts_with("nothing changed"),
        "{}",
        again.text
    );
    assert_eq!(app.rows(&t, "products").await, 3);

    let changed = PRODUCTS.replace("31.50", "33.00");
    let third = import(&app, &t, "table=products", &changed).await;
    assert_eq!(counts(&third), [0, 1, 2, 0], "{}", third.text);

    // History, newest first, and one audit row per import with the file's SHA-256.
    let viewer = app.token_for(&t, Role::Viewer);
    let history = app.get(&viewer, "/api/v1/imports?limit=2").await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text);
    assert_eq!(history.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(history.body["data"][0]["updated"], 1);
    let cursor = history.body["next_cursor"].as_str().unwrap();
    let rest = app
        .get(&viewer, &format!("/api/v1/imports?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["data"][0]["id"], id.as_str());
    let one = app.get(&viewer, &format!("/api/v1/imports/{id}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["table"], "products");
    assert_eq!(one.body["inserted"], 3);
    let sha = format!("{:x}", Sha256::digest(PRODUCTS.as_bytes()));
    assert_eq!(one.body["file_sha256"], sha.as_str());
    let audited: Vec<(String, Value)> = sqlx::query_as(
        "SELECT action, metadata FROM public.audit_logs WHERE tenant_id = $1 AND action = 'import.completed' ORDER BY created_at",
    )
    .bind(t.tenant.id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 3);
    assert_eq!(audited[0].1["file_sha256"], sha.as_str());
    assert_eq!(audited[0].1["inserted"], 3);
    assert_eq!(audited[1].1["unchanged"], 3);
    let missing = app
        .get(
            &viewer,
            "/api/v1/imports/00000000-0000-4000-8000-000000000000",
        )
        .await;
    missing.problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn every_table_imports_and_reimports_idempotently() {
    let app = TestApp::spawn().await;
    let t = app.tenant("imp-tables", Tier::Professional).await;
    let files = [
        (
            "companies",
            "Company Name,Currency,VAT number,Year end\nAcme,eur,GB1,12-31\nAcme Retail,USD,,06-30\n",
        ),
        (
            "products",
            "Company,SKU,Name,Price\nAcme,A-1,Widget,10\nAcme Retail,A-2,Gadget,20\n",
        ),
        (
            "inventory",
            "Company,SKU,Warehouse,On hand,Reserved,Unit cost,Last counted\nAcme,A-1,London,100,10,2.50,2026-11-30\nAcme,A-1,Leeds,5,,2.50,\nAcme Retail,A-2,London,7,0,1,2026-11-30T10:00:00Z\n",
        ),
        (
            "sales",
            "Company,Date,SKU,Qty,Unit Price,Channel,Customer,Transaction ID\n\
             Acme,2026-11-01,A-1,2,10.00,web,Ann,\n\
             Acme,2026-11-01,A-1,2,10.00,web,Ann,\n\
             Acme,02/11/2026,A-1,1,10.00,shop,Bob,\n\
             Acme Retail,2026-11-03,A-2,3,20.00,amazon,,AMZ-1\n",
        ),
        (
            "working-capital-metrics",
            "Company,Period,Period type,Cash,Receivables,Inventory,Payables,Short term debt,DSO,DIO,DPO\n\
             Acme,2026-10-31,monthly,100,50,80,40,10,30,60,20\n\
             Acme,2026-09-30,Monthly,90,50,80,40,10,30,60,20\n",
        ),
    ];
    // The sales file's 02/11/2026 is ambiguous without a date format.
    for (table, csv) in files {
        let query = if table == "sales" {
            format!("table={table}&date_format=day-first")
        } else {
            format!("table={table}")
        };
        let first = import(&app, &t, &query, csv).await;
        assert_eq!(first.status, StatusCode::CREATED, "{table}: {}", first.text);
        let [inserted, updated, unchanged, rejected] = counts(&first);
        assert!(
            inserted > 0 && updated == 0 && unchanged == 0 && rejected == 0,
            "{table}: {}",
            first.text
        );
        let again = import(&app, &t, &query, csv).await;
        assert_eq!(again.status, StatusCode::CREATED, "{table}: {}", again.text);
        assert_eq!(
            counts(&again),
            [0, 0, inserted, 0],
            "{table}: {}",
            again.text
        );
    }
    assert_eq!(app.rows(&t, "companies").await, 2);
    assert_eq!(
        scalar(&app, &t, "SELECT count(*) FROM {s}.companies WHERE currency = 'EUR' AND fiscal_year_end = '12-31'").await,
        1
    );
    assert_eq!(app.rows(&t, "inventory").await, 3);
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT quantity_reserved::bigint FROM {s}.inventory WHERE warehouse_location = 'Leeds'"
        )
        .await,
        0
    );
    // Two identical sales lines are lines 1 and 2 of that order; totals computed.
    assert_eq!(app.rows(&t, "sales").await, 4);
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT max(order_line)::bigint FROM {s}.sales WHERE channel = 'web'"
        )
        .await,
        2
    );
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT count(*) FROM {s}.sales WHERE sale_date = '2026-11-02' AND total_amount = 10.00"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT (sum(total_amount) * 100)::bigint FROM {s}.sales"
        )
        .await,
        (40 + 10 + 60) * 100
    );
    // Working capital and the cash conversion cycle derived as the API derives them.
    assert_eq!(
        scalar(&app, &t, "SELECT count(*) FROM {s}.working_capital_metrics WHERE working_capital IN (180, 170) AND cash_conversion_cycle = 70").await,
        2
    );

    // A changed sale found by its external id is updated, not duplicated.
    let moved = "Company,Date,SKU,Qty,Unit Price,Transaction ID\nAcme Retail,2026-11-04,A-2,3,20.00,AMZ-1\n";
    let reply = import(&app, &t, "table=sales", moved).await;
    assert_eq!(counts(&reply), [0, 1, 0, 0], "{}", reply.text);
    assert_eq!(app.rows(&t, "sales").await, 4);
}

#[tokio::test]
async fn bad_rows_are_listed_and_refuse_the_whole_file_unless_skipped() {
    let app = TestApp::spawn().await;
    let t = app.tenant("imp-bad", Tier::Professional).await;
    app.company(&t, "Acme").await;
    import(&app, &t, "table=products", "sku,name\nA-1,Widget\n").await;
    let long = "x".repeat(60);
    let csv = format!(
        "sale_date,sku,quantity,unit_price,currency,channel,external_id\n\
         2026-11-01,A-1,1,10,USD,web,E1\n\
         2026-13-01,A-1,1,10,USD,web,E2\n\
         03/04/2026,A-1,1,10,USD,web,E3\n\
         2026-11-01,NOPE,1,10,USD,web,E4\n\
         2026-11-01,A-1,0,10,USD,web,E5\n\
         2026-11-01,A-1,1,-5,USD,web,E6\n\
         2026-11-01,A-1,,10,USD,web,E7\n\
         2026-11-01,A-1,1,10,XYZ,web,E8\n\
         2026-11-01,A-1,1,10,USD,{long},E9\n\
         2026-11-01,A-1,1,10,USD,web,E1\n\
         2026-11-01,A-1,1,\"12,5\",USD,web,E10\n\
         2026-11-02,A-1,2,10,USD,web,E11\n"
    );
    let refused = import(&app, &t, "table=sales", &csv).await;
    let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected");
    let report = &problem["import"];
    assert_eq!(report["rows"], 12);
    assert_eq!(report["rejected"], 10);
    assert_eq!(report["status"], "rejected");
    let rejections = report["rejections"].as_array().unwrap();
    let got: Vec<(u64, String, String)> = rejections
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["field"].as_str().unwrap_or("").to_owned(),
                r["value"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want = [
        (3, "sale_date", "2026-13-01"),
        (4, "sale_date", "03/04/2026"),
        (5, "sku", "NOPE"),
        (6, "quantity", "0"),
        (7, "unit_price", "-5"),
        (8, "quantity", ""),
        (9, "currency", "XYZ"),
        (10, "channel", long.as_str()),
        (11, "", ""),
        (12, "unit_price", "12,5"),
    ];
    let want: Vec<(u64, String, String)> = want
        .iter()
        .map(|(l, f, v)| (*l, (*f).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(got, want, "{}", refused.text);
    assert!(
        rejections[1]["reason"]
            .as_str()
            .unwrap()
            .contains("date_format")
    );
    assert!(rejections[2]["reason"].as_str().unwrap().contains("SKU"));
    assert!(rejections[8]["reason"].as_str().unwrap().contains("line 2"));
    assert!(
        rejections[9]["reason"]
            .as_str()
            .unwrap()
            .contains("decimal_separator")
    );
    assert_eq!(rejections[0]["column"], "sale_date");
    // Nothing written, nothing in the history.
    assert_eq!(app.rows(&t, "sales").await, 0);
    assert_eq!(app.rows(&t, "imports").await, 1);

    // The same file with skip_invalid: the two valid rows, the others listed.
    let skipped = import(&app, &t, "table=sales&skip_invalid=true", &csv).await;
    assert_eq!(skipped.status, StatusCode::CREATED, "{}", skipped.text);
    assert_eq!(counts(&skipped), [2, 0, 0, 10]);
    assert_eq!(app.rows(&t, "sales").await, 2);
    let id = skipped.body["id"].as_str().unwrap();
    let stored = app
        .get(
            &app.token_for(&t, Role::Viewer),
            &format!("/api/v1/imports/{id}"),
        )
        .await;
    assert_eq!(stored.body["rejections"].as_array().unwrap().len(), 10);

    // Whole-file problems: a required column missing, an unknown mapping target.
    let no_price = import(
        &app,
        &t,
        "table=sales",
        "sale_date,sku,quantity\n2026-11-01,A-1,1\n",
    )
    .await;
    let problem = no_price.problem(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected");
    assert!(problem["detail"].as_str().unwrap().contains("unit_price"));
    let bad_map = import(
        &app,
        &t,
        "table=products&mapping=Ref%3Dcolour",
        "Ref,name\nB-1,B\n",
    )
    .await;
    bad_map.problem(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected");
    let unknown_table = import(&app, &t, "table=orders", "a\n1\n").await;
    unknown_table.problem(StatusCode::BAD_REQUEST, "invalid_parameter");
    let no_company = import(
        &app,
        &t,
        "table=products&company_id=00000000-0000-4000-8000-000000000000",
        "sku,name\nB-1,B\n",
    )
    .await;
    no_company.problem(StatusCode::UNPROCESSABLE_ENTITY, "reference_not_found");
    assert_eq!(app.rows(&t, "products").await, 1);
}

#[tokio::test]
async fn mapping_formats_and_dry_runs() {
    let app = TestApp::spawn().await;
    let t = app.tenant("imp-map", Tier::Professional).await;
    app.company(&t, "Acme").await;
    // Headers no alias knows, a decimal comma and semicolons.
    let csv = "Ref;Designation;PV\nB-1;Bouteille;1.234,50\nB-2;Verre;3,20\n";
    let dry = import(
        &app,
        &t,
        "table=products&mapping=Ref%3Dsku,Designation%3Dname,PV%3Dunit_price&decimal_separator=%2C&dry_run=true",
        csv,
    )
    .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text);
    assert_eq!(dry.body["status"], "dry_run");
    assert_eq!(dry.body["id"], Value::Null);
    assert_eq!(counts(&dry), [2, 0, 0, 0]);
    assert_eq!(app.rows(&t, "products").await, 0);
    assert_eq!(app.rows(&t, "imports").await, 0);
    let real = import(
        &app,
        &t,
        "table=products&mapping=Ref%3Dsku,Designation%3Dname,PV%3Dunit_price&decimal_separator=%2C",
        csv,
    )
    .await;
    assert_eq!(counts(&real), [2, 0, 0, 0], "{}", real.text);
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT count(*) FROM {s}.products WHERE unit_price IN (1234.50, 3.20)"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn roles_plan_limits_and_the_body_limit_apply() {
    let app = TestApp::spawn_with(
        HttpConfig {
            max_import_bytes: 4096,
            ..HttpConfig::default()
        },
        5,
    )
    .await;
    let t = app.tenant("imp-limits", Tier::Starter).await;
    app.company(&t, "Acme").await;
    let viewer = app.token_for(&t, Role::Viewer);
    let refused = send(
        &app,
        &viewer,
        "table=products",
        CSV,
        b"sku,name\nA,B\n".to_vec(),
    )
    .await;
    refused.problem(StatusCode::FORBIDDEN, "insufficient_role");

    // Starter allows one company: a file adding a second is refused whole.
    let two = import(&app, &t, "table=companies", "name\nAcme\nSecond Co\n").await;
    two.problem(StatusCode::FORBIDDEN, "plan_limit_reached");
    assert_eq!(app.rows(&t, "companies").await, 1);
    let same = import(&app, &t, "table=companies", "name,currency\nacme,GBP\n").await;
    assert_eq!(counts(&same), [0, 1, 0, 0], "{}", same.text);

    // Over the configured maximum: 413 before the body is read.
    let big = format!("sku,name\n{}", "A-1,Widget\n".repeat(600));
    let member = app.token_for(&t, Role::Member);
    let too_big = send(&app, &member, "table=products", CSV, big.into_bytes()).await;
    too_big.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Without Content-Length (chunked), the stream is cut at the maximum: 413 as well.
    let big_rows: String = (0..400).map(|i| format!("B-{i},Widget\n")).collect();
    let status = chunked_post(&app, &member, "table=products", &[big_rows.as_str(); 4]).await;
    assert_eq!(status, 413);
    let status = chunked_post(
        &app,
        &member,
        "table=products&dry_run=true",
        &["A-1,Widget\n", "A-2,Gadget\n"],
    )
    .await;
    assert_eq!(status, 200);
    let json = send(
        &app,
        &member,
        "table=products",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    json.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_eq!(app.rows(&t, "products").await, 0);
}

/// Posts `sku,name` and then `chunks` as a chunked body (no Content-Length); returns the
/// status code.
async fn chunked_post(app: &TestApp, token: &str, query: &str, chunks: &[&str]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/imports?{query} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut parts = vec!["sku,name\n".to_owned()];
    parts.extend(chunks.iter().map(|c| (*c).to_owned()));
    for part in parts {
        let framed = format!("{:x}\r\n{part}\r\n", part.len());
        // The server may answer and close before the whole body is sent.
        if stream.write_all(framed.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[tokio::test]
async fn every_template_imports_as_it_is_into_an_empty_tenant() {
    let app = TestApp::spawn().await;
    let t = app.tenant("imp-templates", Tier::Professional).await;
    let viewer = app.token_for(&t, Role::Viewer);
    for table in [
        "companies",
        "products",
        "inventory",
        "sales",
        "working-capital-metrics",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/imports/templates/{table}.csv")))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let template = response.text().await.unwrap();
        assert_eq!(template.lines().count(), 2, "{template}");
        let reply = import(&app, &t, &format!("table={table}"), &template).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{table}: {}", reply.text);
        assert_eq!(counts(&reply), [1, 0, 0, 0], "{table}");
        assert_eq!(reply.body["ignored_columns"], serde_json::json!([]));
    }
    let missing = app
        .get(&viewer, "/api/v1/imports/templates/orders.csv")
        .await;
    missing.problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_spreadsheet_imports_from_the_named_sheet() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let app = TestApp::spawn().await;
    let t = app.tenant("imp-xlsx", Tier::Professional).await;
    app.company(&t, "Acme").await;
    import(
        &app,
        &t,
        "table=products",
        "sku,name\nA-1,Widget\nA-2,Gadget\n",
    )
    .await;

    let mut workbook = Workbook::new();
    workbook
        .add_worksheet()
        .set_name("Notes")
        .unwrap()
        .write_string(0, 0, "not this one")
        .unwrap();
    let sheet = workbook.add_worksheet().set_name("Sales").unwrap();
    let date = Format::new().set_num_format("dd/mm/yyyy");
    for (c, h) in ["Order Date", "Item Code", "Qty", "Unit Price", "Channel"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    for (r, (day, sku, qty, price)) in [(3, "A-1", 2.0, 9.99), (4, "A-2", 1.0, 0.1 + 0.2)]
        .into_iter()
        .enumerate()
    {
        let row = r as u32 + 1;
        sheet
            .write_datetime_with_format(
                row,
                0,
                ExcelDateTime::from_ymd(2026, 11, day).unwrap(),
                &date,
            )
            .unwrap();
        sheet.write_string(row, 1, sku).unwrap();
        sheet.write_number(row, 2, qty).unwrap();
        sheet.write_number(row, 3, price).unwrap();
        sheet.write_string(row, 4, "retail").unwrap();
    }
    let bytes = workbook.save_to_buffer().unwrap();

    let member = app.token_for(&t, Role::Member);
    let reply = send(
        &app,
        &member,
        "table=sales&sheet=Sales",
        XLSX,
        bytes.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["format"], "xlsx");
    assert_eq!(counts(&reply), [2, 0, 0, 0]);
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT count(*) FROM {s}.sales WHERE sale_date = '2026-11-04' AND unit_price = 0.30"
        )
        .await,
        1
    );
    let again = send(
        &app,
        &member,
        "table=sales&sheet=Sales",
        XLSX,
        bytes.clone(),
    )
    .await;
    assert_eq!(counts(&again), [0, 0, 2, 0], "{}", again.text);
    let wrong = send(&app, &member, "table=sales&sheet=Nope", XLSX, bytes).await;
    let problem = wrong.problem(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected");
    assert!(problem["detail"].as_str().unwrap().contains("Notes, Sales"));
    let garbage = send(
        &app,
        &member,
        "table=sales",
        XLSX,
        b"not a workbook".to_vec(),
    )
    .await;
    garbage.problem(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected");
}

#[tokio::test]
async fn a_hundred_thousand_sales_rows_import_in_one_request() {
    let app = TestApp::spawn_with(
        HttpConfig {
            request_timeout: std::time::Duration::from_secs(300),
            ..HttpConfig::default()
        },
        5,
    )
    .await;
    let t = app.tenant("imp-100k", Tier::Professional).await;
    app.company(&t, "Acme").await;
    let mut products = String::from("sku,name\n");
    for p in 0..50 {
        products.push_str(&format!("P-{p},Product {p}\n"));
    }
    import(&app, &t, "table=products", &products).await;
    let mut csv = String::from("external_id,sale_date,sku,quantity,unit_price,channel\n");
    for i in 0..100_000u32 {
        csv.push_str(&format!(
            "S{i},2026-{:02}-{:02},P-{},{},{}.{:02},web\n",
            i % 12 + 1,
            i % 28 + 1,
            i % 50,
            i % 9 + 1,
            i % 90 + 1,
            i % 100
        ));
    }
    let started = std::time::Instant::now();
    let reply = import(&app, &t, "table=sales", &csv).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        &reply.text[..reply.text.len().min(2000)]
    );
    assert_eq!(counts(&reply), [100_000, 0, 0, 0]);
    eprintln!("100k sales rows imported in {:?}", started.elapsed());
    assert_eq!(app.rows(&t, "sales").await, 100_000);
    let again = import(&app, &t, "table=sales", &csv).await;
    assert_eq!(counts(&again), [0, 0, 100_000, 0]);
}

/// `capliquify import`: the same import from the command line, its JSON report, the
/// refusal's exit code, and the operator in the audit trail.
#[tokio::test]
async fn the_command_line_imports_a_file() {
    use std::process::Command;
    let db = crate::common::TestDb::new().await;
    let t = db.tenant("imp-cli", Tier::Professional).await;
    db.exec(&format!(
        "INSERT INTO {}.companies (name) VALUES ('Acme')",
        t.schema_name
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("products.csv");
    std::fs::write(&good, PRODUCTS).unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "sku,name,unit_price\nA-1,Widget,abc\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_capliquify"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let path = good.to_str().unwrap();
    let out = run(&[
        "import",
        "imp-cli",
        path,
        "--table",
        "products",
        "--dry-run",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "dry_run");
    assert_eq!(report["inserted"], 3);
    let count = format!("SELECT count(*) FROM {}.products", t.schema_name);
    assert_eq!(db.scalar_i64(&count).await, 0);

    let out = run(&["import", "imp-cli", path, "--table", "products"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("imported (csv) into products: 3 rows inserted"),
        "{text}"
    );
    assert!(text.contains("Item code") && text.contains("sku"), "{text}");
    assert_eq!(db.scalar_i64(&count).await, 3);
    let out = run(&["import", "imp-cli", path, "--table", "products", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unchanged"], 3);

    let out = run(&[
        "import",
        "imp-cli",
        bad.to_str().unwrap(),
        "--table",
        "products",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("unit_price") && text.contains("abc"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was imported"));
    let operator: i64 = db
        .scalar_i64(&format!(
            "SELECT count(*) FROM public.audit_logs WHERE tenant_id = '{}' AND action = 'import.completed' AND metadata->'actor'->>'kind' = 'operator'",
            t.id
        ))
        .await;
    assert_eq!(operator, 2);
}

/// The import's memory does not grow with the file: 100,000 sales rows (~7 MB) through
/// `capliquify import` stay within 64 MiB resident (VmHWM sampled; the file is streamed and
/// the rows leave in 1 MiB COPY batches). docs/benchmarks.md measures 1,000,000 rows.
#[tokio::test]
async fn a_hundred_thousand_rows_import_within_a_memory_bound() {
    use std::process::Command;
    const BOUND_KIB: u64 = 64 * 1024;
    let db = crate::common::TestDb::new().await;
    let t = db.tenant("imp-memory", Tier::Professional).await;
    db.exec(&format!(
        "INSERT INTO {s}.companies (name) VALUES ('Acme');
         INSERT INTO {s}.products (company_id, sku, name)
           SELECT c.id, 'P-' || g, 'Product ' || g FROM {s}.companies c, generate_series(0, 49) g;",
        s = t.schema_name
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sales.csv");
    let mut csv =
        String::from("Transaction ID,Order date,Item code,Qty,Unit price,Channel,Customer\n");
    for i in 0..100_000u32 {
        csv.push_str(&format!(
            "T-{i:07},2026-{:02}-{:02},P-{},{},{}.{:02},web,Customer {:04} Ltd\n",
            i % 12 + 1,
            i % 28 + 1,
            i % 50,
            i % 9 + 1,
            i % 90 + 1,
            i % 100,
            i % 997
        ));
    }
    std::fs::write(&path, &csv).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_capliquify"))
        .args(["import", "imp-memory"])
        .arg(&path)
        .args(["--table", "sales", "--json"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(hwm) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(hwm);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["inserted"], 100_000);
    assert!(peak_kib > 0, "no memory reading");
    assert!(
        peak_kib < BOUND_KIB,
        "peak RSS {peak_kib} KiB is over the bound of {BOUND_KIB} KiB"
    );
    eprintln!("100k rows: peak RSS {:.1} MiB", peak_kib as f64 / 1024.0);
}

/// Rules between fields and references by name: reserved above on hand, an unknown or
/// ambiguous company, a rule broken with a stored row (the file alone is valid).
#[tokio::test]
async fn rules_between_fields_and_company_names_reject_rows() {
    let app = TestApp::spawn().await;
    let t = app.tenant("imp-rules", Tier::Professional).await;
    app.company(&t, "Acme").await;
    app.company(&t, "Twin").await;
    app.company(&t, "twin").await;
    let products = import(
        &app,
        &t,
        "table=products",
        "company,sku,name\nAcme,A-1,Widget\n",
    )
    .await;
    assert_eq!(counts(&products), [1, 0, 0, 0], "{}", products.text);
    let csv = "company,sku,warehouse,on hand,reserved\n\
               Acme,A-1,Leeds,5,9\n\
               Nobody,A-1,York,5,1\n\
               Twin,A-1,Hull,5,1\n\
               ,A-1,Bath,5,1\n\
               Acme,A-1,Kent,5,1\n";
    let refused = import(&app, &t, "table=inventory", csv).await;
    let report = &refused.problem(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected")["import"];
    let got: Vec<(u64, String, String)> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["field"].as_str().unwrap_or("").to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((got[0].0, got[0].1.as_str()), (2, "quantity_reserved"));
    assert!(got[0].2.contains("quantity_on_hand"));
    assert_eq!((got[1].0, got[1].1.as_str()), (3, "company"));
    assert!(got[1].2.contains("no company is named"));
    assert_eq!((got[2].0, got[2].1.as_str()), (4, "company"));
    assert!(got[2].2.contains("several companies"));
    assert_eq!((got[3].0, got[3].1.as_str()), (5, "company"));
    assert_eq!(app.rows(&t, "inventory").await, 0);

    // A row valid on its own that breaks a rule with the stored row it updates: the
    // database refuses it, and the whole file with it.
    let first = import(
        &app,
        &t,
        "table=inventory",
        "company,sku,warehouse,on hand,reserved\nAcme,A-1,Kent,5,4\n",
    )
    .await;
    assert_eq!(counts(&first), [1, 0, 0, 0], "{}", first.text);
    let lower = import(
        &app,
        &t,
        "table=inventory",
        "company,sku,warehouse,on hand\nAcme,A-1,Kent,2\n",
    )
    .await;
    let problem = lower.problem(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("quantity_reserved"),
        "{}",
        lower.text
    );
    assert_eq!(
        scalar(
            &app,
            &t,
            "SELECT quantity_on_hand::bigint FROM {s}.inventory"
        )
        .await,
        5
    );
}
