"""Lake Formation drift (admins): granted requests vs what Lake Formation holds."""

import pandas as pd
import streamlit as st

from mesh import ui

ctx = ui.context()
st.title("Lake Formation drift")
st.caption(
    "Missing: a granted request whose grants are gone (re-applied by Fix). Unexplained: "
    "grants to consumer accounts on this catalog that no request explains, for example "
    "made by hand in the console; they are reported only, never touched."
)

with ui.guard():
    if not ctx.user.is_admin:
        st.error("Only admins can check drift.")
        st.stop()
    left, right = st.columns(2)
    run = left.button("Run the check", key="drift_run", type="primary")
    fix = right.button("Run the check and fix missing grants", key="drift_fix")
    if run or fix:
        with st.spinner("Reading Lake Formation permissions…"):
            ctx.services.lifecycle.reconcile(ctx.user, fix=fix)
    report = ctx.services.marketplace.last_report_for(ctx.user.username)
    if report is None:
        st.info("No check has run yet.")
    else:
        st.caption(
            f"Last check at {ui.md(report['checked_at'])} by {ui.md(report['actor'])}, "
            f"over {report['granted_requests']} granted requests."
        )
        cols = st.columns(3)
        cols[0].metric("Missing", len(report["missing"]))
        cols[1].metric("Unexplained", len(report["unexplained"]))
        cols[2].metric("Fixed", sum(1 for f in report["fixed"] if f["fixed"]))
        if report["missing"]:
            st.subheader("Missing")
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "request": m["request_id"],
                            "account": m["account"],
                            "resource": str(m["grant"]["Resource"]),
                            "lacking": ", ".join(m["lacking"]),
                        }
                        for m in report["missing"]
                    ]
                ),
                hide_index=True,
                key="drift_missing",
            )
        if report["unexplained"]:
            st.subheader("Unexplained")
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "account": u["account"],
                            "resource": str(u["resource"]),
                            "permissions": ", ".join(u["permissions"]),
                            "grant option": ", ".join(u["grant_option"]),
                        }
                        for u in report["unexplained"]
                    ]
                ),
                hide_index=True,
                key="drift_unexplained",
            )
        if report["fixed"]:
            st.subheader("Fixed")
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "request": f["request_id"],
                            "fixed": f["fixed"],
                            "error": f.get("error", ""),
                        }
                        for f in report["fixed"]
                    ]
                ),
                hide_index=True,
                key="drift_fixed",
            )
