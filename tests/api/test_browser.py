"""The ops page in headless Chromium (Playwright driving the system's Chromium): sign in, switch language,
open a segment, download its CSV and check the rows, open a member, find one by phone. Screenshots of each
step go to ``$MEMBERFLOW_TEST_OUTPUT/browser`` (default ``test-output/browser`` in the repository)."""

from __future__ import annotations

import csv
import re

import duckdb
import pytest

from tests.support import SCORE_DAY, browser_page, vault_phones
from tests.support import screenshot as _shot

pytestmark = pytest.mark.browser


@pytest.fixture
def page(api_app):
    with browser_page(api_app) as page:
        yield page


def _queued(ops_ws, staff: str) -> int:
    with duckdb.connect(str(ops_ws.warehouse_path), read_only=True) as con:
        return con.execute(
            "select count(*) from staff_queue where as_of = ? and staff_owner = ?", [SCORE_DAY, staff]
        ).fetchone()[0]


def _sign_in(page, token: str, ready: str) -> None:
    page.goto(page.base_url + "/")
    page.fill("#token", token)
    page.click("#signin-form button")
    page.wait_for_selector(ready)


def test_sign_in_open_a_segment_download_its_csv_and_open_a_member(page, ops_ws, tokens, tmp_path):
    from memberflow.core.phones import phone_token

    with duckdb.connect(str(ops_ws.warehouse_path), read_only=True) as con:
        segment, size = con.execute(
            "select segment, count(*) from segment_memberships where as_of = ? group by 1 "
            "order by count(*) desc limit 1",
            [SCORE_DAY],
        ).fetchone()
        expected = dict(
            con.execute(
                "select member_id, status from segment_memberships where as_of = ? and segment = ?",
                [SCORE_DAY, segment],
            ).fetchall()
        )
        tokens_to_members = dict(
            con.execute(
                "select id_value, member_id from member_identifiers where id_type = 'phone_token'"
            ).fetchall()
        )

    page.goto(page.base_url + "/")
    page.fill("#token", "mf_00000000_wrong")
    page.click("#signin-form button")
    page.wait_for_selector("#signin-error:has-text('令牌无效')")
    _shot(page, "01-sign-in-refused")
    page.fill("#token", tokens.ops)
    page.click("#signin-form button")
    page.wait_for_selector("[data-testid=segments]")
    assert page.inner_text("#who").startswith("olivia")
    assert page.locator("#nav-audit").is_hidden()  # ops does not see the audit log
    rows = page.locator("[data-testid=segments] tbody tr")
    assert rows.count() >= 7
    # segments by their names in the page's language (segments.yml's labels), not their keys
    assert page.inner_text("[data-testid=segment-care_high_value_at_risk]") == "高价值流失预警关怀"
    _shot(page, "02-segments-zh")
    page.click("[data-testid=lang]")
    page.wait_for_selector("h1:has-text('Segments today')")
    assert page.inner_text("[data-testid=segment-care_high_value_at_risk]") == "High-value members at risk"
    _shot(page, "03-segments-en")

    page.click(f"[data-testid=segment-{segment}]")
    page.wait_for_selector("[data-testid=members]")
    assert page.get_attribute("[data-testid=segment-title]", "data-segment") == segment
    assert f"{size:,} members" in page.inner_text("[data-testid=pager]")
    page.wait_for_selector("[data-testid=trend-chart] svg text")
    trend = page.locator("[data-testid=trend-chart] svg text").all_text_contents()
    assert {"Members", "Day", "Sent", "Holdout"} <= set(trend), trend  # axis names and the legend
    # the members' score range beside everyone scored, and how to read a decile
    ranges = page.inner_text("[data-testid=score-ranges]")
    assert "everyone scored" in ranges and "D10 = the top 10 %" in ranges
    assert page.locator("[data-testid=unmasked]").count() == 0  # no unmasked export for ops
    _shot(page, "04-segment")

    with page.expect_download() as info:
        page.click("[data-testid=download]")
    target = tmp_path / "export.csv"
    info.value.save_as(target)
    text = target.read_text(encoding="utf-8-sig")
    exported = list(csv.DictReader(text.splitlines()))
    assert {r["member_id"]: r["status"] for r in exported} == expected
    assert not vault_phones(ops_ws) & set(re.findall(r"(?<!\d)1[3-9]\d{9}(?!\d)", text))
    page.wait_for_selector(f"#toast:has-text('{len(exported):,}')")

    first = page.locator("[data-testid=member-link]").first
    member_id = first.inner_text()
    first.click()
    page.wait_for_selector("[data-testid=identifiers]")
    assert page.inner_text("[data-testid=member-id]") == member_id
    _shot(page, "05-member")

    key = ops_ws.id_key()
    phone = next(p for p in sorted(vault_phones(ops_ws)) if phone_token(p, key) in tokens_to_members)
    page.fill("#lookup-value", phone)
    page.click("#lookup button")
    owner = tokens_to_members[phone_token(phone, key)]
    page.wait_for_selector(f"[data-testid=member-id]:has-text('{owner}')")
    assert phone not in page.content()
    _shot(page, "06-member-found-by-phone")


def test_admin_sees_the_audit_log_and_can_export_unmasked(page, ops_ws, tokens, tmp_path):
    page.goto(page.base_url + "/")
    page.fill("#token", tokens.admin)
    page.click("#signin-form button")
    page.wait_for_selector("[data-testid=segments]")
    page.locator("[data-testid^=segment-]").first.click()
    page.wait_for_selector("[data-testid=download]")
    page.check("[data-testid=unmasked]")
    with page.expect_download() as info:
        page.click("[data-testid=download]")
    assert info.value.suggested_filename.endswith("-unmasked.csv")
    page.click("#nav-audit")
    page.wait_for_selector("td:has-text('adam (管理员)')")
    assert "✔" in page.inner_text("#view")
    _shot(page, "07-audit")
    page.click("a[href='#/models']")
    page.wait_for_selector(".plots img")
    _shot(page, "08-models")


def test_a_health_manager_works_their_queue_in_both_languages(page, ops_ws, tokens):
    from tests.api.conftest import STAFF_ID

    queued = _queued(ops_ws, STAFF_ID)
    _sign_in(page, tokens.health_manager, "[data-testid=queue]")
    # their queue and nothing else: one nav entry, no lookup, every item theirs
    assert page.locator("#nav a:visible").all_inner_texts() == ["我的队列"]
    assert page.locator("#lookup").is_hidden()
    items = page.locator("[data-testid=queue-item]")
    assert items.count() == queued > 0
    assert f"共 {queued} 人" in page.inner_text("[data-testid=queue-counts]")
    first = items.first
    assert re.search(r"[\u4e00-\u9fff]", first.locator("[data-testid=script]").inner_text())
    _shot(page, "09-queue-zh")

    first.locator("[data-testid=item-details] summary").click()  # open the member
    assert first.locator("[data-testid=item-details] ul.reasons li").count() >= 1
    # the task is in WeCom, waiting for the staff member to send it from their phone
    assert first.locator("[data-testid=wecom-result]").inner_text() == "企微任务: 待员工在企微确认发送"
    # the last member's message was sent from the staff member's WeCom: read back, the item is done
    last = items.last
    assert last.locator("[data-testid=item-state]").inner_text() == "已完成 · 企微回传"
    last.locator("[data-testid=item-details] summary").click()
    assert last.locator("[data-testid=wecom-result]").inner_text().startswith("企微任务: 已在企微发出 20")
    _shot(page, "10-queue-member-open")
    first.locator("[data-testid=mark-done]").click()
    page.wait_for_selector("[data-testid=queue-item] >> nth=0 >> [data-testid=item-state]:has-text('已完成')")
    done = page.locator("[data-testid=item-state]:has-text('已完成')").count()
    assert done >= 1 and f"已完成 {done}" in page.inner_text("[data-testid=queue-counts]")
    _shot(page, "11-queue-item-done")

    page.click("[data-testid=lang]")
    page.wait_for_selector('h1:has-text("Today\'s queue")')
    scripts = page.locator("[data-testid=script]").all_inner_texts()
    assert scripts and all(s.isascii() for s in scripts)
    assert page.locator("[data-testid=item-state]").first.inner_text().startswith("done")
    _shot(page, "12-queue-en")


def test_a_newer_navigation_wins_over_a_slow_older_one(page, tokens):
    page.goto(page.base_url + "/")
    page.fill("#token", tokens.ops)
    page.click("#signin-form button")
    page.wait_for_selector("[data-testid=segments]")
    # the outcomes answer comes 1.5 s late, and comes even if the page gave up on it
    page.evaluate(
        """() => {
          const original = window.fetch;
          window.fetch = (url, options = {}) => String(url).includes("/api/outcomes")
            ? new Promise((resolve, reject) => setTimeout(
                () => original(url, { ...options, signal: undefined }).then(resolve, reject), 1500))
            : original(url, options);
        }"""
    )
    page.evaluate("location.hash = '#/outcomes'")
    page.wait_for_selector("[data-testid=loading]:visible")  # the page says it is loading
    page.evaluate("location.hash = '#/deliveries'")  # the user moves on before it answers
    page.wait_for_selector("h1:has-text('触达记录')")
    page.wait_for_timeout(2500)  # the outcomes answer has come and gone
    assert page.locator("h1:has-text('触达记录')").count() == 1
    assert page.locator("h1:has-text('触达效果')").count() == 0
    assert page.locator("[data-testid=loading]").is_hidden()


def test_the_dashboards_draw_every_report_with_axes_and_legends_in_both_languages(page, ops_ws, tokens):
    """Ops open 经营看板: each dashboard's headline numbers equal an independent query on the warehouse,
    every chart has its axes and legend, and no channel, stage, category or topic shows as a code."""
    with duckdb.connect(str(ops_ws.warehouse_path), read_only=True) as con:
        (conversion,) = con.execute(
            """
            with day as (select max(activity_date) as d from int_member_activity_days),
            m as (
                select first_seen_on, (select min(order_date) from fct_orders o
                    where o.member_id = dm.member_id and o.status != 'cancelled') as first_order
                from dim_member dm
            ),
            prospects as (
                select * from m, day
                where (first_order is null or first_order > first_seen_on) and first_seen_on + 15 <= day.d
            )
            select count(*) filter (where first_order - first_seen_on <= 15) / count(*) from prospects
            """
        ).fetchone()
        enrolled = con.execute(
            "select count(distinct (chat_id, external_userid)) from stg_wecom__group_events "
            "where event_date <= (select max(activity_date) from int_member_activity_days)"
        ).fetchone()[0]
    page.goto(page.base_url + "/#/reports")
    page.fill("#token", tokens.ops)
    page.click("#signin-form button")
    page.wait_for_selector("[data-testid=chart-economics] svg text")
    assert page.inner_text("[data-testid=kpi-conversion_15d] b") == f"{conversion * 100:.1f}%"
    assert page.inner_text("[data-testid=kpi-enrolled] b") == f"{enrolled:,}"
    charts = {
        "checkin": ["营内人数", "打卡率", "日期"],
        "livestream": ["观看人数", "7天内下单人数"],
        "conversion": ["首单转化率", "7天转化率", "15天转化率", "企业微信"],
        "repurchase": ["复购率", "钙片"],
        "lifecycle": ["活跃", "有流失风险", "周末日期"],
        "economics": ["元(对数坐标)", "CAC(元)", "至今 LTV(元)", "直播"],
    }
    for chart, words in charts.items():
        texts = page.locator(f"[data-testid=chart-{chart}] svg text").all_text_contents()
        assert all(w in texts for w in words), (chart, words, texts[:20])
        assert any(re.fullmatch(r"[\d,.]+%?", t) for t in texts), (chart, "no axis ticks")
    # every code a table shows is shown by its label: no raw channel, stage, category or topic
    tables = page.locator("[data-report] table").all_inner_texts()
    codes = ["wechat_channels", "douyin", "ecommerce", "miniprogram", "at_risk", "silent", "daily_walk"]
    assert not [c for c in codes if any(re.search(rf"\b{c}\b", t) for t in tables)]
    _shot(page, "13-dashboards-zh")

    page.click("[data-testid=lang]")
    page.wait_for_selector("h1:has-text('Dashboards')")
    page.wait_for_selector("[data-testid=chart-economics] svg text")
    texts = page.locator("[data-testid=chart-checkin] svg text").all_text_contents()
    assert "Check-in rate" in texts and "In camp" in texts
    assert "First-order conversion" in page.inner_text("[data-report=first_order_conversion] h2")
    _shot(page, "14-dashboards-en")
    page.click("[data-testid=lang]")  # back to Chinese
    page.wait_for_selector("h1:has-text('经营看板')")

    # the segment list says why a segment has nobody today, in Chinese
    from memberflow.segments import load_segments

    with duckdb.connect(str(ops_ws.warehouse_path), read_only=True) as con:
        filled = {
            r[0]
            for r in con.execute(
                "select distinct segment from segment_memberships where as_of = ?", [SCORE_DAY]
            ).fetchall()
        }
    empty = [s.name for s in load_segments() if s.name not in filled]
    page.evaluate("location.hash = '#/segments'")
    page.wait_for_selector("[data-testid=segments]")
    for name in empty:
        assert page.inner_text(f"[data-testid=empty-{name}]").startswith("没有成员:"), name


# the view's text without what is not a business string: ids and masked values, and the rules' definition
VIEW_TEXT = """() => {
  const view = document.querySelector('#view').cloneNode(true);
  view.querySelectorAll('pre, .mono, svg').forEach((n) => n.remove());
  document.body.append(view);
  const text = view.innerText;
  view.remove();
  return text;
}"""


def test_the_chinese_page_shows_no_code_where_a_business_string_belongs(page, ops_ws, tokens):
    """Every channel, stage, tier, interest, category, model, status, suppression reason and identifier
    type the segment and member views show is shown by its Chinese label, and every reason is in Chinese."""
    labels = page.request.get(
        page.base_url + "/api/labels", headers={"Authorization": f"Bearer {tokens.ops}"}
    ).json()
    codes = {
        code
        for group, values in labels.items()
        if group != "segment"
        for code, label in values.items()
        if code not in label["zh"]  # unionid and openid are what Chinese ops call them too
    } | {"send", "already_sent", "holdout", "suppressed"}
    with duckdb.connect(str(ops_ws.warehouse_path), read_only=True) as con:
        segment = con.execute(
            "select segment from segment_memberships where as_of = ? and status = 'suppressed' "
            "group by 1 order by count(*) desc limit 1",
            [SCORE_DAY],
        ).fetchone()[0]

    def untranslated() -> list[str]:
        text = page.evaluate(VIEW_TEXT)
        return sorted(c for c in codes if re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text))

    page.goto(page.base_url + "/")
    page.fill("#token", tokens.ops)
    page.click("#signin-form button")
    page.wait_for_selector("[data-testid=segments]")
    assert untranslated() == []
    for status in ("suppressed", ""):  # the reasons given, and then the members to send first
        target = f"#/segments/{segment}?page=1&status={status}"
        page.evaluate(f"location.hash = '{target}'")
        page.wait_for_selector(f"#view[data-ready='{target}'] [data-testid=members]")
        assert untranslated() == [], status
        reasons = page.locator("[data-testid=members] ul.reasons li").all_inner_texts()
        assert all(re.search(r"[\u4e00-\u9fff]", r) for r in reasons), reasons[:5]
        _shot(page, f"15-segment-{status or 'all'}-zh")
    with duckdb.connect(str(ops_ws.warehouse_path), read_only=True) as con:
        explained = con.execute(
            "select min(member_id) from member_scores where as_of = ? and len(reasons) > 0",
            [SCORE_DAY],
        ).fetchone()[0]
    target = f"#/members/{explained}"
    page.evaluate(f"location.hash = '{target}'")
    page.wait_for_selector(f"#view[data-ready='{target}'] [data-testid=chart-scores] svg text")
    scores = page.locator("[data-testid=chart-scores] svg text").all_text_contents()
    assert {"概率", "日期", "流失模型"} <= set(scores), scores
    assert untranslated() == []
    reasons = page.locator("ul.reasons li").all_inner_texts()
    assert reasons and all(re.search(r"[\u4e00-\u9fff]", r) for r in reasons), reasons[:5]
    _shot(page, "16-member-zh")
    # the models (names, metrics, promotion, monitoring), deliveries, outcomes and queues pages too
    for view, ready in (("models", "[data-model] .stats"), ("deliveries", "table"), ("outcomes", ".card"),
                        ("queues", "[data-testid=queues]")):  # fmt: skip
        page.evaluate(f"location.hash = '#/{view}'")
        page.wait_for_selector(f"#view[data-ready='#/{view}'] {ready}")
        assert untranslated() == [], view
    page.evaluate("location.hash = '#/models'")
    page.wait_for_selector("#view[data-ready='#/models'] [data-model] .stats")
    text = page.evaluate(VIEW_TEXT)
    assert "流失模型" in text and "AUC(区分度)" in text and "Brier 分数" in text
    _shot(page, "19-models-zh")


def test_a_store_manager_sees_their_store_and_opens_a_member_of_it(page, ops_ws, tokens):
    from tests.api.conftest import STAFF_ID, STORE_ID

    with duckdb.connect(str(ops_ws.warehouse_path), read_only=True) as con:
        ours = {
            r[0]
            for r in con.execute(
                "select distinct q.staff_owner from staff_queue as q inner join dim_staff as s "
                "on s.staff_id = q.staff_owner where q.as_of = ? and s.store_id = ? and s.is_active",
                [SCORE_DAY, STORE_ID],
            ).fetchall()
        }
    queued = _queued(ops_ws, STAFF_ID)
    _sign_in(page, tokens.store_manager, "[data-testid=queues]")
    assert page.locator("#nav a:visible").all_inner_texts() == ["服务队列"]
    assert page.locator("#lookup").is_hidden()
    assert page.inner_text("[data-testid=queues-title]") == f"门店 {STORE_ID} 的服务队列"
    assert set(page.locator("[data-testid=queues] tbody tr td:first-child a").all_inner_texts()) == ours
    roles = page.locator("[data-testid=queues] tbody tr td:first-child span").all_inner_texts()
    assert roles and {r.strip() for r in roles} <= {"健康管理师", "导购"}  # from the staff directory
    assert "店长" in page.inner_text("#who")
    _shot(page, "17-store-manager-queues")
    page.click(f"[data-testid=queues] a[href='#/queue/{STAFF_ID}']")
    page.wait_for_selector("[data-testid=queue-item]")
    assert page.locator("[data-testid=queue-item]").count() == queued
    assert page.locator("[data-testid=mark-done]").count() == 0  # they read; the staff member marks
    first = page.locator("[data-testid=queue-item]").first
    first.locator("[data-testid=item-details] summary").click()
    first.locator("[data-testid=open-profile]").click()
    page.wait_for_selector("[data-testid=member-id]")
    assert page.locator("[data-testid=identifiers] li").count() >= 1
    _shot(page, "18-store-manager-member")
