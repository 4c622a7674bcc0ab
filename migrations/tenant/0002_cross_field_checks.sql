-- Rules between two fields of a row, enforced by the database so that a partial update
-- (which sees only the fields it changes) cannot break them. Named
-- <table>_<field>__<rule>_check: the API names <field> in its 422.

ALTER TABLE inventory
    ADD CONSTRAINT inventory_quantity_reserved__within_on_hand_check CHECK (quantity_reserved <= quantity_on_hand);

ALTER TABLE forecasts
    ADD CONSTRAINT forecasts_predicted_value__within_bounds_check CHECK (
        (lower_bound IS NULL OR lower_bound <= predicted_value)
        AND (upper_bound IS NULL OR predicted_value <= upper_bound));
