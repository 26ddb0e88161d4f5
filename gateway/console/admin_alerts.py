"""The alerts page: open and recent alerts with their notifications and channels; acknowledge (audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from gateway.alerts.service import AlertService
from gateway.canonical.errors import NotFound
from gateway.console.web import PREFIX, Page, page_for

router = APIRouter(prefix=PREFIX, include_in_schema=False)


Admin = Annotated[Page, page_for("admin")]


def _alerts(page: Page) -> AlertService:
    service = page.request.app.state.container.alerts
    if service is None:
        raise NotFound("alerts are not configured in this process")
    return service


@router.get("/admin/alerts")
async def alerts(page: Admin) -> Response:
    view = await _alerts(page).view()
    return page.render("alerts.html", view=view, csrf=page.session.csrf,
                       acknowledged=page.request.query_params.get("acknowledged"))


@router.post("/admin/alerts/{alert_id}/acknowledge")
async def acknowledge(alert_id: int, page: Admin) -> Response:
    await page.form()
    alert = await _alerts(page).acknowledge(alert_id=alert_id, principal=page.session.principal)
    return RedirectResponse(f"{PREFIX}/admin/alerts?acknowledged={alert.id}#alert-{alert.id}", status_code=303)
