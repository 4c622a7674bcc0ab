//! Companies, products, inventory and sales: what the company is, sells and holds.

use super::*;

// ---------------------------------------------------------------------------------------
// Companies: B organizations, A entities, else one company.

pub(super) async fn companies(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let mut rows = Vec::new();
    let mut tally = Tally::default();
    // Production may hold generation A with some of B's tables beside it (B's migration
    // was marked applied, not run): organizations count only beside B's products, or
    // without entities.
    let organizations = cx.snap.has("organizations", &["id"])
        && (cx.snap.generation("products") == Some(Generation::B)
            || !cx.snap.has("entities", &["id"]));
    let (source, generation, read) = if organizations {
        let src = cx
            .snap
            .rows(
                "SELECT id::text, name::text, display_name::text, domain::text, logo::text,
                        industry::text, size::text, plan::text,
                        (plan_expiry AT TIME ZONE 'UTC') AS plan_expiry, billing_email::text,
                        settings::jsonb AS settings, features::jsonb AS features
                   FROM organizations ORDER BY created_at, id"
                    .into(),
            )
            .await?;
        let currency = if src.is_empty() {
            String::new()
        } else {
            cx.home_currency("Sentia's organizations")?
        };
        for r in &src {
            let source_id = text(r, "id")?.unwrap_or_default();
            let Some(name) = text(r, "display_name")?.or(text(r, "name")?) else {
                tally.skip("no name");
                continue;
            };
            if !fits(&name, 255) {
                tally.skip("name longer than 255 characters");
                continue;
            }
            let id = cx.company_id(uuid_of("organizations", &source_id), &name);
            let settings = json!({ "source": {
                "system": "sentia", "organization_id": source_id, "name": text(r, "name")?,
                "domain": text(r, "domain")?, "logo": text(r, "logo")?,
                "industry": text(r, "industry")?, "size": text(r, "size")?,
                "plan": text(r, "plan")?, "plan_expiry": get::<DateTime<Utc>>(r, "plan_expiry")?,
                "billing_email": text(r, "billing_email")?,
                "settings": get::<Value>(r, "settings")?, "features": get::<Value>(r, "features")?,
            }});
            let company = Company {
                id,
                currency: currency.clone(),
            };
            cx.companies.insert(format!("org:{source_id}"), company);
            rows.push(company_row(id, name, None, None, &currency, settings));
        }
        ("organizations", Generation::B, src.len())
    } else if cx.snap.has("entities", &["id"]) {
        let src = cx
            .snap
            .rows(
                "SELECT id::text, name::text, country_code::text, currency_code::text,
                        tax_number::text, address, is_active
                   FROM entities ORDER BY created_at, id"
                    .into(),
            )
            .await?;
        for r in &src {
            let source_id = text(r, "id")?.unwrap_or_default();
            let Some(name) = text(r, "name")? else {
                tally.skip("no name");
                continue;
            };
            let currency = match text(r, "currency_code")?.map(|c| c.to_uppercase()) {
                Some(c) if crate::import::sentia::is_currency(&c) => c,
                _ => {
                    tally.note("no valid currency_code: the home currency (--currency)");
                    cx.home_currency("some entities")?
                }
            };
            let tax_id = text(r, "tax_number")?.filter(|t| {
                let ok = fits(t, 50);
                if !ok {
                    tally.note("tax_number longer than 50 characters dropped");
                }
                ok
            });
            let id = cx.company_id(uuid_of("entities", &source_id), &name);
            let settings = json!({ "source": {
                "system": "sentia", "entity_id": source_id,
                "country_code": text(r, "country_code")?, "address": text(r, "address")?,
                "is_active": get::<bool>(r, "is_active")?,
            }});
            let company = Company {
                id,
                currency: currency.clone(),
            };
            cx.companies.insert(format!("entity:{source_id}"), company);
            rows.push(company_row(
                id,
                name.clone(),
                Some(name),
                tax_id,
                &currency,
                settings,
            ));
        }
        ("entities", Generation::A, src.len())
    } else {
        cx.missing("entities");
        cx.missing("organizations");
        ("(none)", Generation::A, 0)
    };
    if rows.is_empty() {
        // "Else a single company" (SENTIA-SOURCE.md §3.0).
        let name = cx
            .options
            .company_name
            .clone()
            .unwrap_or_else(|| cx.tenant.name.clone());
        let currency =
            cx.home_currency("the source has no entities or organizations, so its rows")?;
        let id = cx.company_id(derived(&["company", "single"]), &name);
        tally.note("the source has no company: one made for all rows");
        cx.default_company = Some(Company {
            id,
            currency: currency.clone(),
        });
        rows.push(company_row(
            id,
            name,
            None,
            None,
            &currency,
            json!({ "source": { "system": "sentia" } }),
        ));
    } else {
        let first = rows[0].id;
        cx.default_company = cx.companies.values().find(|c| c.id == first).cloned();
        if rows.len() > 1 {
            tally.note("rows that name no company go to the first one");
        }
    }
    cx.plan.company_ids = rows.iter().map(|r| r.id).collect();
    cx.push(
        "companies",
        source,
        generation,
        read,
        tally,
        Rows::Table("companies", rows),
    );
    Ok(())
}

fn company_row(
    id: Uuid,
    name: String,
    legal_name: Option<String>,
    tax_id: Option<String>,
    currency: &str,
    settings: Value,
) -> Row {
    Row {
        id,
        cells: vec![
            ("name", Cell::Text(Some(name))),
            ("legal_name", Cell::Text(legal_name)),
            ("tax_id", Cell::Text(tax_id)),
            ("currency", Cell::Text(Some(currency.to_owned()))),
            ("settings", Cell::Json(Some(settings))),
        ],
    }
}

// ---------------------------------------------------------------------------------------
// Products, by SKU.

pub(super) async fn products(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let Some(generation) = cx.snap.generation("products") else {
        cx.missing("products");
        return Ok(());
    };
    let sql = match generation {
        Generation::A => {
            let market = if cx.snap.has("markets", &["code", "currency_code"]) {
                "(SELECT m.currency_code::text FROM markets m WHERE m.code = p.market_region)"
            } else {
                "NULL::text"
            };
            let rop = if cx.snap.has("inventory_policies", &["rop"]) {
                "(SELECT ip.rop FROM inventory_policies ip WHERE ip.product_id = p.id
                   ORDER BY ip.effective_from DESC LIMIT 1)::int4"
            } else {
                "NULL::int4"
            };
            let eoq = if cx.snap.has("inventory_levels", &["economic_order_quantity"]) {
                "(SELECT il.economic_order_quantity FROM inventory_levels il
                   WHERE il.product_id = p.id AND il.economic_order_quantity IS NOT NULL
                   ORDER BY il.snapshot_date DESC LIMIT 1)::int4"
            } else {
                "NULL::int4"
            };
            format!(
                "SELECT p.id::text, NULL::text AS company, p.sku::text, p.name::text,
                        NULL::text AS description, p.category::text, p.unit_cost::numeric,
                        p.selling_price::numeric, {market} AS currency, {rop} AS reorder_point,
                        {eoq} AS reorder_quantity, NULL::int4 AS lead_time, p.is_active
                   FROM products p ORDER BY p.created_at, p.id"
            )
        }
        Generation::B => "SELECT id::text, 'org:' || organization_id AS company, sku, name, description,
                        category, unit_cost::numeric, selling_price::numeric, NULL::text AS currency,
                        reorder_point::int4, NULL::int4 AS reorder_quantity, lead_time::int4,
                        is_active AND discontinued_at IS NULL AS is_active
                   FROM products ORDER BY created_at, id"
            .into(),
    };
    let src = cx.snap.rows(sql).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    for r in &src {
        let source_id = text(r, "id")?.unwrap_or_default();
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                tally.skip(why);
                continue;
            }
        };
        let Some(sku) = text(r, "sku")?.filter(|s| fits(s, 100)) else {
            tally.skip("no SKU, or one longer than 100 characters");
            continue;
        };
        let Some(name) = text(r, "name")? else {
            tally.skip("no name");
            continue;
        };
        let name = if fits(&name, 255) {
            name
        } else {
            tally.note("name cut to 255 characters");
            cut(name, 255)
        };
        let category = text(r, "category")?.map(|c| {
            if fits(&c, 100) {
                c
            } else {
                tally.note("category cut to 100 characters");
                cut(c, 100)
            }
        });
        let mut amount = |column: &str| -> Result<Option<Decimal>, SentiaError> {
            Ok(dec(r, column)?.and_then(|v| {
                let m = money(v);
                if m.is_none() {
                    tally.note(format!("negative or too large {column} dropped"));
                }
                m
            }))
        };
        let unit_cost = amount("unit_cost")?;
        let unit_price = amount("selling_price")?;
        let mut count = |column: &str| -> Result<Option<i32>, SentiaError> {
            Ok(int(r, column)?.filter(|v| {
                if *v < 0 {
                    tally.note(format!("negative {column} dropped"));
                }
                *v >= 0
            }))
        };
        let reorder_point = count("reorder_point")?;
        let reorder_quantity = count("reorder_quantity")?;
        let lead_time = count("lead_time")?;
        let currency = text(r, "currency")?
            .map(|c| c.to_uppercase())
            .filter(|c| crate::import::sentia::is_currency(c))
            .unwrap_or_else(|| company.currency.clone());
        let id = cx
            .existing
            .skus
            .get(&sku)
            .copied()
            .unwrap_or_else(|| uuid_of("products", &source_id));
        cx.products.insert(
            source_id,
            Product {
                id,
                company: company.clone(),
                currency: currency.clone(),
            },
        );
        rows.push(Row {
            id,
            cells: vec![
                ("company_id", Cell::Uuid(Some(company.id))),
                ("sku", Cell::Text(Some(sku))),
                ("name", Cell::Text(Some(name))),
                ("description", Cell::Text(text(r, "description")?)),
                ("category", Cell::Text(category)),
                ("unit_cost", Cell::Dec(unit_cost)),
                ("unit_price", Cell::Dec(unit_price)),
                ("currency", Cell::Text(Some(currency))),
                ("reorder_point", Cell::Int(reorder_point)),
                ("reorder_quantity", Cell::Int(reorder_quantity)),
                ("lead_time_days", Cell::Int(lead_time)),
                (
                    "is_active",
                    Cell::Bool(get::<bool>(r, "is_active")?.unwrap_or(true)),
                ),
            ],
        });
    }
    cx.push(
        "products",
        "products",
        generation,
        src.len(),
        tally,
        Rows::Table("products", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Inventory: B items; A the latest snapshot per product and location.

pub(super) async fn inventory(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    // `cost` is the unit cost carried over; `newer` counts the later snapshots of the same
    // product and location (0: the row is the one kept).
    let (source, generation, select, checksum) = if cx.snap.has("inventory_items", &["id"]) {
        let select = "SELECT id::text, 'org:' || organization_id AS company, product_id::text,
                             warehouse_id::text AS warehouse, location::text, batch_number::text,
                             quantity_on_hand::int4 AS on_hand, quantity_reserved::int4 AS reserved,
                             round(unit_cost, 2) AS cost, false AS in_base,
                             (last_counted AT TIME ZONE 'UTC') AS counted_at,
                             count(*) OVER (PARTITION BY product_id, warehouse_id, location)::int4 AS sharing,
                             0::int4 AS newer
                        FROM inventory_items";
        (
            "inventory_items",
            Generation::B,
            format!("{select} ORDER BY created_at, id"),
            format!("SELECT coalesce(sum(on_hand * cost), 0)::numeric FROM ({select}) s"),
        )
    } else if cx.snap.has("inventory_levels", &["snapshot_date"]) {
        // A snapshot valued in another currency than its base carries the base cost.
        let select = "SELECT id::text, 'entity:' || entity_id AS company, product_id::text,
                             location_id::text AS warehouse, NULL::text AS location,
                             NULL::text AS batch_number,
                             (available_quantity + coalesce(reserved_quantity, 0))::int4 AS on_hand,
                             coalesce(reserved_quantity, 0)::int4 AS reserved,
                             round(CASE WHEN currency_code_valuation <> currency_code_base
                                        THEN unit_cost_base ELSE unit_cost END, 2) AS cost,
                             coalesce(currency_code_valuation <> currency_code_base, false) AS in_base,
                             (last_count_date::timestamp AT TIME ZONE 'UTC') AS counted_at,
                             1::int4 AS sharing,
                             (row_number() OVER (PARTITION BY product_id, location_id
                                  ORDER BY snapshot_date DESC, updated_at DESC NULLS LAST, id) - 1)::int4 AS newer
                        FROM inventory_levels";
        (
            "inventory_levels",
            Generation::A,
            format!("{select} ORDER BY product_id, location_id, newer"),
            format!(
                "SELECT coalesce(sum(on_hand * cost), 0)::numeric FROM ({select}) s WHERE newer = 0"
            ),
        )
    } else {
        cx.missing("inventory_items");
        cx.missing("inventory_levels");
        return Ok(());
    };
    let src = cx.snap.rows(select).await?;
    let source_sum = cx.snap.sum(checksum).await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    let mut not_carried = Decimal::ZERO;
    for r in &src {
        if int(r, "newer")?.unwrap_or(0) > 0 {
            tally.skip("an older snapshot of the same product and location (the latest is kept)");
            continue;
        }
        let on_hand = int(r, "on_hand")?;
        let cost = dec(r, "cost")?;
        let value = match (on_hand, cost) {
            (Some(q), Some(c)) => Decimal::from(q) * c,
            _ => Decimal::ZERO,
        };
        let skip = |why: &str, tally: &mut Tally, not_carried: &mut Decimal| {
            tally.skip(why);
            *not_carried += value;
        };
        let Some(product) = text(r, "product_id")?.and_then(|p| cx.products.get(&p).cloned())
        else {
            skip("its product was not imported", &mut tally, &mut not_carried);
            continue;
        };
        let company = match text(r, "company")? {
            Some(k) => match cx.companies.get(&k) {
                Some(c) => c.clone(),
                None => {
                    skip(
                        "its organization or entity is not in the source, or was skipped",
                        &mut tally,
                        &mut not_carried,
                    );
                    continue;
                }
            },
            None => product.company.clone(),
        };
        let (Some(on_hand), Some(reserved)) = (on_hand, int(r, "reserved")?) else {
            skip("no quantity", &mut tally, &mut not_carried);
            continue;
        };
        if on_hand < 0 || reserved < 0 {
            skip("a negative quantity", &mut tally, &mut not_carried);
            continue;
        }
        if reserved > on_hand {
            skip("more reserved than on hand", &mut tally, &mut not_carried);
            continue;
        }
        let cost = match cost {
            Some(c) if c < Decimal::ZERO => {
                tally.note("negative unit cost dropped");
                not_carried += value;
                None
            }
            c => c,
        };
        if get::<bool>(r, "in_base")?.unwrap_or(false) {
            tally.note("valued in another currency: the base currency's unit cost");
        }
        let mut location = text(r, "warehouse")?.unwrap_or_default();
        if let Some(l) = text(r, "location")? {
            location = format!("{location}/{l}");
        }
        // Batches of the same product and place stay apart (our table has no batch).
        if int(r, "sharing")?.unwrap_or(1) > 1
            && let Some(b) = text(r, "batch_number")?
        {
            location = format!("{location} #{b}");
        }
        if !fits(&location, 100) {
            skip(
                "a warehouse location longer than 100 characters",
                &mut tally,
                &mut not_carried,
            );
            continue;
        }
        let source_id = text(r, "id")?.unwrap_or_default();
        let id = match generation {
            Generation::B => uuid_of("inventory_items", &source_id),
            Generation::A => derived(&["inventory_levels", &product.id.to_string(), &location]),
        };
        rows.push(Row {
            id,
            cells: vec![
                ("company_id", Cell::Uuid(Some(company.id))),
                ("product_id", Cell::Uuid(Some(product.id))),
                (
                    "warehouse_location",
                    Cell::Text(Some(location).filter(|l| !l.is_empty())),
                ),
                ("quantity_on_hand", Cell::Int(Some(on_hand))),
                ("quantity_reserved", Cell::Int(Some(reserved))),
                ("unit_cost", Cell::Dec(cost)),
                (
                    "last_counted_at",
                    Cell::Time(get::<DateTime<Utc>>(r, "counted_at")?),
                ),
            ],
        });
    }
    cx.plan.checksums.push(ChecksumPlan {
        name: "Σ inventory.total_value",
        table: "inventory",
        column: "total_value",
        source: source_sum,
        not_carried,
        ids: rows.iter().map(|r| r.id).collect(),
    });
    cx.push(
        "inventory",
        source,
        generation,
        src.len(),
        tally,
        Rows::Table("inventory", rows),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Sales: A historical_sales only. total_amount is gross_revenue (before discounts).

pub(super) async fn sales(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    if !cx.snap.has("historical_sales", &["gross_revenue"]) {
        cx.missing("historical_sales");
        return Ok(());
    }
    let (channel, join) = if cx.snap.has("sales_channels", &["id"]) {
        let market = if cx.snap.has("markets", &["code"]) {
            "(SELECT m.currency_code::text FROM markets m WHERE m.code = sc.market_code)"
        } else {
            "NULL::text"
        };
        (
            format!(
                "sc.name::text AS channel_name, sc.channel_type::text AS channel_type, {market} AS market_currency"
            ),
            "LEFT JOIN sales_channels sc ON sc.id = hs.sales_channel_id",
        )
    } else {
        (
            "NULL::text AS channel_name, NULL::text AS channel_type, NULL::text AS market_currency"
                .to_owned(),
            "",
        )
    };
    let src = cx
        .snap
        .rows(format!(
            "SELECT hs.id::text, 'entity:' || hs.entity_id AS company, hs.product_id::text,
                    hs.sale_date, hs.quantity_sold::int4 AS quantity, hs.unit_price::numeric,
                    hs.gross_revenue::numeric, hs.order_id::text, hs.order_item_id::text,
                    hs.currency_code_tx::text AS currency, {channel}
               FROM historical_sales hs {join}
              ORDER BY hs.sale_date, hs.sale_datetime, hs.id"
        ))
        .await?;
    let source_sum = cx
        .snap
        .sum("SELECT coalesce(sum(gross_revenue), 0)::numeric FROM historical_sales".into())
        .await?;
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    let mut not_carried = Decimal::ZERO;
    let mut seen: HashSet<String> = HashSet::new();
    for r in &src {
        let gross = dec(r, "gross_revenue")?.unwrap_or_default();
        let mut skip = |why: &str, tally: &mut Tally| {
            tally.skip(why);
            not_carried += gross;
        };
        let source_id = text(r, "id")?.unwrap_or_default();
        let Some(product) = text(r, "product_id")?.and_then(|p| cx.products.get(&p).cloned())
        else {
            skip("its product was not imported", &mut tally);
            continue;
        };
        let company = match cx.company(text(r, "company")?) {
            Ok(c) => c,
            Err(why) => {
                skip(why, &mut tally);
                continue;
            }
        };
        let Some(quantity) = int(r, "quantity")?.filter(|q| *q > 0) else {
            skip("quantity_sold is not positive", &mut tally);
            continue;
        };
        let Some(unit_price) = dec(r, "unit_price")?.and_then(money) else {
            skip("unit_price is negative or too large", &mut tally);
            continue;
        };
        let Some(total) = money(gross) else {
            skip("gross_revenue is negative or too large", &mut tally);
            continue;
        };
        let external_id = match (text(r, "order_id")?, text(r, "order_item_id")?) {
            (Some(o), Some(i)) => format!("{o}:{i}"),
            _ => format!("sentia:historical_sales:{source_id}"),
        };
        if !fits(&external_id, 255) {
            skip("an order id longer than 255 characters", &mut tally);
            continue;
        }
        if !seen.insert(external_id.clone()) {
            skip(
                "the same order line (order_id:order_item_id) as an earlier row",
                &mut tally,
            );
            continue;
        }
        let channel = match (text(r, "channel_name")?, text(r, "channel_type")?) {
            (Some(n), _) if fits(&n, 50) => Some(n),
            (_, Some(t)) => Some(cut(t.to_lowercase(), 50)),
            (Some(n), None) => {
                tally.note("channel name cut to 50 characters");
                Some(cut(n, 50))
            }
            (None, None) => None,
        };
        let currency = text(r, "currency")?
            .or(text(r, "market_currency")?)
            .map(|c| c.to_uppercase())
            .filter(|c| crate::import::sentia::is_currency(c))
            .unwrap_or_else(|| product.currency.clone());
        rows.push(Row {
            id: uuid_of("historical_sales", &source_id),
            cells: vec![
                ("company_id", Cell::Uuid(Some(company.id))),
                ("product_id", Cell::Uuid(Some(product.id))),
                ("sale_date", Cell::Date(get::<NaiveDate>(r, "sale_date")?)),
                ("quantity", Cell::Int(Some(quantity))),
                ("unit_price", Cell::Dec(Some(unit_price))),
                ("total_amount", Cell::Dec(Some(total))),
                ("currency", Cell::Text(Some(currency))),
                ("channel", Cell::Text(channel)),
                ("external_id", Cell::Text(Some(external_id))),
            ],
        });
    }
    cx.plan.checksums.push(ChecksumPlan {
        name: "Σ sales.total_amount",
        table: "sales",
        column: "total_amount",
        source: source_sum,
        not_carried,
        ids: rows.iter().map(|r| r.id).collect(),
    });
    cx.push(
        "sales",
        "historical_sales",
        Generation::A,
        src.len(),
        tally,
        Rows::Table("sales", rows),
    );
    Ok(())
}
