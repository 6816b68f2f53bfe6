"""The declarative schemas load, are complete, and drive dtypes and DDL."""

import pandas as pd
import pytest

from evaluation.data.schema import TABLE_ORDER, all_schemas, load_schema, missing_markers


def test_every_table_has_a_schema_with_key_and_meanings():
    schemas = all_schemas()
    assert list(schemas) == list(TABLE_ORDER)
    for name, schema in schemas.items():
        assert schema.key, name
        for col in schema.columns:
            assert col.description.strip(), f"{name}.{col.name} has no meaning"
            assert col.name == col.name.strip().lower()


def test_design_minimum_columns_present():
    need = {
        "schools": ["urn", "name", "la_code", "region", "phase", "establishment_type", "urban_rural", "easting",
                    "northing", "opened", "closed"],
        "partnerships": ["partnership_id", "name", "type", "formal", "opened", "closed"],
        "memberships": ["urn", "partnership_id", "joined", "left", "role"],
        "school_years": ["urn", "year", "ks2_rwm_expected_pct", "ks4_attainment8", "ks4_progress8", "pupils",
                         "fsm_pct", "eal_pct", "sen_pct", "ofsted_grade"],
        "pupils": ["pupil_id", "year", "urn", "prior_attainment", "fsm", "eal", "sen"],
    }
    for table, cols in need.items():
        assert set(cols) <= set(load_schema(table).column_names), table
    assert load_schema("school_years").key == ("urn", "year")
    assert load_schema("memberships").key == ("urn", "partnership_id", "joined")


def test_partnership_types_are_the_design_vocabulary():
    allowed = load_schema("partnerships").column("type").allowed
    assert set(allowed) == {"multi_academy_trust", "federation_hard", "federation_soft",
                            "teaching_school_alliance", "umbrella_trust", "collaborative_partnership",
                            "informal_cluster"}


def test_percentages_are_bounded_0_100():
    for col in load_schema("school_years").columns:
        if col.unit == "percent":
            assert (col.min, col.max) == (0, 100), col.name


def test_markers_include_dfe_codes():
    markers = missing_markers()
    for code in ["SUPP", "NE", "NP", "LOWCOV", "x", "c", "..", "NEW", "LOW", "DNS", "NA", "z"]:
        assert code in markers and markers[code]


def test_dtypes_follow_schema():
    dtypes = load_schema("school_years").dtypes
    assert dtypes["urn"] == "Int64" and dtypes["fsm_pct"] == "float64"
    assert isinstance(load_schema("schools").dtypes["region"], pd.CategoricalDtype)


def test_unknown_table_is_rejected():
    with pytest.raises(KeyError):
        load_schema("pupil")
