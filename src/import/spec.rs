//! What each importable table takes: its fields, their types and rules (the same as the
//! API's for that resource), the header names recognised for each, the natural key a
//! re-import matches on, and the template's example row.

/// A table a file can be imported into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Companies,
    Products,
    Inventory,
    Sales,
    WorkingCapitalMetrics,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Products,
        Table::Inventory,
        Table::Sales,
        Table::WorkingCapitalMetrics,
        Table::Companies,
    ];

    /// The word of `?table=` and `--table`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Companies => "companies",
            Self::Products => "products",
            Self::Inventory => "inventory",
            Self::Sales => "sales",
            Self::WorkingCapitalMetrics => "working-capital-metrics",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == word)
    }

    /// The tenant table written.
    pub fn sql_table(self) -> &'static str {
        match self {
            Self::Companies => "companies",
            Self::Products => "products",
            Self::Inventory => "inventory",
            Self::Sales => "sales",
            Self::WorkingCapitalMetrics => "working_capital_metrics",
        }
    }

    /// The fields of the table's files.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Self::Companies => COMPANIES,
            Self::Products => PRODUCTS,
            Self::Inventory => INVENTORY,
            Self::Sales => SALES,
            Self::WorkingCapitalMetrics => METRICS,
        }
    }

    /// Rows of the file name a company (a `company` column, `company_id`, or the only one).
    pub fn has_company(self) -> bool {
        self != Self::Companies
    }

    /// The natural key, as the header of a message ("SKU", …).
    pub fn key_description(self) -> &'static str {
        match self {
            Self::Companies => "name",
            Self::Products => "sku",
            Self::Inventory => "sku and warehouse_location",
            Self::Sales => {
                "external_id, or sale_date, sku, channel, customer_id, customer_name and order_line"
            }
            Self::WorkingCapitalMetrics => "company, period_type and period_date",
        }
    }
}

/// The type and rule of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text of at most this many characters.
    Text(usize),
    /// A whole number of at least `min` (`integer`).
    Whole {
        min: i32,
    },
    /// An amount ≥ 0, `numeric(15,2)`.
    Money,
    /// An amount, `numeric(15,2)`.
    SignedMoney,
    /// A signed `numeric(precision, scale)`.
    Numeric(u32, u32),
    Date,
    Instant,
    /// ISO 4217 (upper-cased).
    Currency,
    Bool,
    /// monthly, quarterly or annual.
    PeriodType,
    /// MM-DD.
    MonthDay,
    /// A company, by name.
    Company,
    /// A product, by SKU.
    Product,
}

impl Kind {
    /// The SQL type of the column in the staging table.
    pub fn sql_type(self) -> &'static str {
        match self {
            Self::Text(_) | Self::Currency | Self::PeriodType | Self::MonthDay => "text",
            Self::Whole { .. } => "integer",
            Self::Money | Self::SignedMoney | Self::Numeric(..) => "numeric",
            Self::Date => "date",
            Self::Instant => "timestamptz",
            Self::Bool => "boolean",
            Self::Company | Self::Product => "uuid",
        }
    }
}

/// Whether a file must give a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A column for it, and a value in every row.
    Required,
    Optional,
    /// An empty cell takes this default (a missing column leaves the stored value).
    Defaulted(&'static str),
}

/// One field of an importable table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The field's name: the template's header and a mapping's target.
    pub field: &'static str,
    /// The table column written.
    pub db: &'static str,
    pub kind: Kind,
    pub need: Need,
    /// Part of the natural key: matched on, never updated.
    pub key: bool,
    /// Other header names that mean this field, compared without case, spaces or
    /// punctuation (`Item code` = `itemcode`).
    pub aliases: &'static [&'static str],
    /// The template's example value.
    pub example: &'static str,
}

const fn col(
    field: &'static str,
    db: &'static str,
    kind: Kind,
    need: Need,
    aliases: &'static [&'static str],
    example: &'static str,
) -> Column {
    Column {
        field,
        db,
        kind,
        need,
        key: false,
        aliases,
        example,
    }
}

const fn key(mut c: Column) -> Column {
    c.key = true;
    c
}

use Kind::*;
use Need::*;

const COMPANY: Column = col(
    "company",
    "company_id",
    Company,
    Optional,
    &["companyname", "entity", "entityname", "legalentity"],
    "Acme Manufacturing",
);

const CURRENCY: Column = col(
    "currency",
    "currency",
    Currency,
    Defaulted("USD"),
    &["ccy", "currencycode", "cur"],
    "USD",
);

const SKU_ALIASES: &[&str] = &[
    "itemcode",
    "productcode",
    "item",
    "itemnumber",
    "itemno",
    "partnumber",
    "partno",
    "articlenumber",
    "productsku",
];

static COMPANIES: &[Column] = &[
    key(col(
        "name",
        "name",
        Text(255),
        Required,
        &["company", "companyname", "entity", "entityname"],
        "Acme Manufacturing",
    )),
    col(
        "legal_name",
        "legal_name",
        Text(255),
        Optional,
        &["registeredname"],
        "Acme Manufacturing Ltd",
    ),
    col(
        "tax_id",
        "tax_id",
        Text(50),
        Optional,
        &["vat", "vatnumber", "vatid", "ein", "taxnumber"],
        "GB123456789",
    ),
    CURRENCY,
    col(
        "fiscal_year_end",
        "fiscal_year_end",
        MonthDay,
        Optional,
        &["yearend", "fye", "financialyearend"],
        "12-31",
    ),
];

static PRODUCTS: &[Column] = &[
    COMPANY,
    key(col(
        "sku",
        "sku",
        Text(100),
        Required,
        SKU_ALIASES,
        "GABA-RED-500",
    )),
    col(
        "name",
        "name",
        Text(255),
        Required,
        &["productname", "itemname", "product", "title"],
        "GABA Red 500ml",
    ),
    col(
        "description",
        "description",
        Text(10000),
        Optional,
        &["details", "productdescription"],
        "Botanical spirit, red label",
    ),
    col(
        "category",
        "category",
        Text(100),
        Optional,
        &["productcategory", "productgroup", "family"],
        "spirits",
    ),
    col(
        "unit_cost",
        "unit_cost",
        Money,
        Optional,
        &["cost", "costprice", "unitcostprice", "standardcost"],
        "8.40",
    ),
    col(
        "unit_price",
        "unit_price",
        Money,
        Optional,
        &[
            "price",
            "sellingprice",
            "salesprice",
            "listprice",
            "unitsellingprice",
        ],
        "24.99",
    ),
    CURRENCY,
    col(
        "reorder_point",
        "reorder_point",
        Whole { min: 0 },
        Optional,
        &["reorderlevel", "minstock", "minimumstock"],
        "200",
    ),
    col(
        "reorder_quantity",
        "reorder_quantity",
        Whole { min: 0 },
        Optional,
        &["reorderqty", "orderquantity"],
        "500",
    ),
    col(
        "lead_time_days",
        "lead_time_days",
        Whole { min: 0 },
        Optional,
        &["leadtime", "leadtimeindays"],
        "14",
    ),
    col(
        "is_active",
        "is_active",
        Bool,
        Defaulted("true"),
        &["active", "enabled"],
        "true",
    ),
];

static INVENTORY: &[Column] = &[
    COMPANY,
    key(col(
        "sku",
        "product_id",
        Product,
        Required,
        SKU_ALIASES,
        "GABA-RED-500",
    )),
    key(col(
        "warehouse_location",
        "warehouse_location",
        Text(100),
        Optional,
        &["warehouse", "location", "site", "bin", "store"],
        "London DC",
    )),
    col(
        "quantity_on_hand",
        "quantity_on_hand",
        Whole { min: 0 },
        Required,
        &[
            "onhand",
            "qtyonhand",
            "quantity",
            "qty",
            "stock",
            "stocklevel",
            "stockonhand",
        ],
        "1200",
    ),
    col(
        "quantity_reserved",
        "quantity_reserved",
        Whole { min: 0 },
        Defaulted("0"),
        &["reserved", "qtyreserved", "allocated"],
        "150",
    ),
    col(
        "unit_cost",
        "unit_cost",
        Money,
        Optional,
        &["cost", "costprice", "standardcost"],
        "8.40",
    ),
    col(
        "last_counted_at",
        "last_counted_at",
        Instant,
        Optional,
        &[
            "lastcounted",
            "countedat",
            "countdate",
            "stocktakedate",
            "lastcountdate",
        ],
        "2026-11-30T18:00:00Z",
    ),
];

static SALES: &[Column] = &[
    key(COMPANY),
    key(col(
        "sku",
        "product_id",
        Product,
        Optional,
        SKU_ALIASES,
        "GABA-RED-500",
    )),
    key(col(
        "sale_date",
        "sale_date",
        Date,
        Required,
        &[
            "date",
            "orderdate",
            "invoicedate",
            "transactiondate",
            "saledate",
        ],
        "2026-11-28",
    )),
    col(
        "quantity",
        "quantity",
        Whole { min: 1 },
        Required,
        &["qty", "units", "unitssold", "quantitysold"],
        "12",
    ),
    col(
        "unit_price",
        "unit_price",
        Money,
        Required,
        &["price", "sellingprice", "salesprice"],
        "24.99",
    ),
    col(
        "total_amount",
        "total_amount",
        Money,
        Optional,
        &[
            "total",
            "amount",
            "linetotal",
            "netamount",
            "totalprice",
            "value",
        ],
        "299.88",
    ),
    CURRENCY,
    key(col(
        "channel",
        "channel",
        Text(50),
        Optional,
        &["saleschannel", "source", "marketplace"],
        "amazon",
    )),
    key(col(
        "external_id",
        "external_id",
        Text(255),
        Optional,
        &["transactionid", "lineid", "saleid", "orderlineid"],
        "AMZ-114-2231-L1",
    )),
    key(col(
        "customer_name",
        "customer_name",
        Text(255),
        Optional,
        &["customer", "client", "clientname", "buyer"],
        "Harvey Nichols",
    )),
    key(col(
        "customer_id",
        "customer_id",
        Text(255),
        Optional,
        &["customernumber", "customerno", "clientid", "accountnumber"],
        "C-1042",
    )),
    key(col(
        "order_line",
        "order_line",
        Whole { min: 1 },
        Optional,
        &["line", "lineno", "linenumber", "orderlinenumber"],
        "1",
    )),
];

static METRICS: &[Column] = &[
    key(COMPANY),
    key(col(
        "period_date",
        "period_date",
        Date,
        Required,
        &["period", "date", "periodend", "periodenddate"],
        "2026-10-31",
    )),
    key(col(
        "period_type",
        "period_type",
        PeriodType,
        Required,
        &["frequency", "granularity", "periodicity"],
        "monthly",
    )),
    col(
        "cash",
        "cash",
        Money,
        Optional,
        &["cashbalance", "cashandequivalents"],
        "250000.00",
    ),
    col(
        "accounts_receivable",
        "accounts_receivable",
        Money,
        Optional,
        &["receivables", "ar", "debtors", "tradereceivables"],
        "180000.00",
    ),
    col(
        "inventory",
        "inventory",
        Money,
        Optional,
        &["stock", "inventoryvalue", "stockvalue"],
        "320000.00",
    ),
    col(
        "accounts_payable",
        "accounts_payable",
        Money,
        Optional,
        &["payables", "ap", "creditors", "tradepayables"],
        "140000.00",
    ),
    col(
        "short_term_debt",
        "short_term_debt",
        Money,
        Optional,
        &["stdebt", "currentdebt", "shorttermborrowings"],
        "50000.00",
    ),
    col(
        "working_capital",
        "working_capital",
        SignedMoney,
        Optional,
        &["nwc", "networkingcapital"],
        "560000.00",
    ),
    col(
        "current_ratio",
        "current_ratio",
        Numeric(10, 4),
        Optional,
        &[],
        "3.9474",
    ),
    col(
        "quick_ratio",
        "quick_ratio",
        Numeric(10, 4),
        Optional,
        &["acidtest", "acidtestratio"],
        "2.2632",
    ),
    col(
        "days_sales_outstanding",
        "days_sales_outstanding",
        Numeric(10, 2),
        Optional,
        &["dso"],
        "42.50",
    ),
    col(
        "days_inventory_outstanding",
        "days_inventory_outstanding",
        Numeric(10, 2),
        Optional,
        &["dio"],
        "95.00",
    ),
    col(
        "days_payables_outstanding",
        "days_payables_outstanding",
        Numeric(10, 2),
        Optional,
        &["dpo"],
        "38.00",
    ),
    col(
        "cash_conversion_cycle",
        "cash_conversion_cycle",
        Numeric(10, 2),
        Optional,
        &["ccc"],
        "99.50",
    ),
    col(
        "operating_cash_flow",
        "operating_cash_flow",
        SignedMoney,
        Optional,
        &["ocf", "cashfromoperations"],
        "42000.00",
    ),
    col(
        "cash_runway_days",
        "cash_runway_days",
        Whole { min: 0 },
        Optional,
        &["runwaydays", "runway", "cashrunway"],
        "540",
    ),
];

/// A header as compared with field names and aliases: lower case, letters and digits only
/// (`Item Code`, `item_code` and `ITEM-CODE` are all `itemcode`).
pub fn normalize(header: &str) -> String {
    header
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Column {
    /// Whether a header (normalized) names this field.
    pub fn answers_to(&self, normalized: &str) -> bool {
        normalize(self.field) == normalized || self.aliases.contains(&normalized)
    }
}

/// The template of `table`: the header row and one example row.
pub fn template(table: Table) -> String {
    let columns = table.columns();
    let line = |f: &dyn Fn(&Column) -> &str| {
        columns
            .iter()
            .map(|c| {
                let v = f(c);
                if v.contains([',', '"', '\n']) {
                    format!("\"{}\"", v.replace('"', "\"\""))
                } else {
                    v.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{}\n{}\n", line(&|c| c.field), line(&|c| c.example))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_header_means_two_fields_of_one_table() {
        for table in Table::ALL {
            let columns = table.columns();
            for (i, a) in columns.iter().enumerate() {
                for b in &columns[i + 1..] {
                    let mut names = vec![normalize(a.field)];
                    names.extend(a.aliases.iter().map(|s| s.to_string()));
                    for name in names {
                        assert!(
                            !b.answers_to(&name),
                            "{}: {name} names both {} and {}",
                            table.as_str(),
                            a.field,
                            b.field
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn headers_compare_without_case_or_punctuation() {
        assert_eq!(normalize("Item Code"), "itemcode");
        assert_eq!(normalize("QTY."), "qty");
        assert_eq!(normalize("unit_price"), "unitprice");
        assert!(PRODUCTS[1].answers_to(&normalize("Item code")));
        assert!(SALES[3].answers_to(&normalize("Qty")));
        assert!(SALES[4].answers_to(&normalize("Unit Price")));
        assert!(Table::parse("working-capital-metrics").is_some());
        assert!(template(Table::Sales).starts_with("company,sku,sale_date,"));
    }
}
