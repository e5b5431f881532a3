"""Unit tests of gust.billing's conversions (no server): times sent as UTC, rows read with
Decimal costs and UTC datetimes. Run: cd sdk/python && python3 -m unittest tests/test_unit_billing.py
"""

import datetime as dt
import unittest
from decimal import Decimal

import gust
from gust import billing, exception


class BillingTest(unittest.TestCase):
    def test_when(self):
        self.assertEqual(billing._when("start", dt.datetime(2026, 1, 2, 3, 4, 5)), "2026-01-02T03:04:05Z")
        self.assertEqual(billing._when("start", dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)), "2026-01-02T00:00:00Z")
        self.assertEqual(billing._when("start", dt.date(2026, 1, 2)), "2026-01-02")
        self.assertIsNone(billing._when("end", None))
        with self.assertRaises(exception.InvalidError):
            billing._when("start", dt.datetime(2026, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))))
        with self.assertRaises(exception.InvalidError):
            billing._when("start", "2026-01-02")

    def test_row(self):
        r = billing._row({"object_id": "ap-1", "description": "app", "environment_name": "main",
                          "interval_start": "2026-03-01T00:00:00Z", "cost": "0.000123456",
                          "cost_by_resource": {"cpu": "0.0001", "gpu:H100": "0.000023456"}, "tags": {"team": "a"}})
        self.assertEqual(r["cost"], Decimal("0.000123456"))
        self.assertEqual(r["cost_by_resource"]["gpu:H100"], Decimal("0.000023456"))
        self.assertEqual(r["interval_start"], dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc))
        self.assertEqual(r["tags"], {"team": "a"})
        self.assertEqual(billing._parse_time("2026-03-01T10:00:00.123456789Z").microsecond, 123456)

    def test_tz(self):
        self.assertIsNone(billing._tz(None))
        self.assertEqual(billing._tz("America/New_York"), "America/New_York")
        local = billing._tz("local")
        self.assertRegex(local, r"^[+-]\d\d:\d\d$")

    def test_bad_resolution(self):
        with self.assertRaises(exception.InvalidError):
            billing.workspace_billing_report(start=dt.datetime(2026, 1, 1), resolution="w")

    def test_names(self):
        self.assertIs(gust.Workspace, billing.Workspace)
        self.assertTrue(callable(gust.Workspace.from_context().billing.report))
        self.assertTrue(callable(gust.App("x", tags={"a": "b"}).set_tags))


if __name__ == "__main__":
    unittest.main()
