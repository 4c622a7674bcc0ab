-- The working-capital engine (src/domain) stores the revenue and cost of goods sold a
-- period's metrics were computed from beside them, so DSO, DIO and DPO can be checked and
-- scenarios rebuilt from the same flows. Null on rows clients stored themselves.
ALTER TABLE working_capital_metrics
    ADD COLUMN revenue            numeric(15,2),
    ADD COLUMN cost_of_goods_sold numeric(15,2);

-- The engine finds "the row of this period" and "the last periods of this type".
CREATE INDEX idx_wcm_company_type_period
    ON working_capital_metrics (company_id, period_type, period_date);
