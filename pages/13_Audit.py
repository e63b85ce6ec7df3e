"""Audit: every write (who, what, which dataset, before, after, when), filtered, as a table and CSV."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pandas as pd
import streamlit as st

from db.engine import session_scope
from ui.auth import require_user
from ui.common import store_or_stop
from workbench.audit import choices, query, to_csv

ROW_LIMIT = 5_000  # shown and downloaded at once; narrow the filters (or use the CLI) for more

st.set_page_config(page_title="Audit · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
require_user()
st.title("Audit log")
st.caption("Every write: decisions, imports, exports, recipe and scheme saves, training launches, dataset "
           "deletions, user changes. CLI twin: `python -m workbench audit [--user] [--action] [--dataset] "
           "[--since] [--until] [--csv FILE]`.")
settings, engine = store_or_stop()

# -- filter ------------------------------------------------------------------------------------
with session_scope(engine) as session:
    known = choices(session)
groups = sorted({a.split(".")[0] for a in known["action"]} - set(known["action"]))
sb = st.sidebar
user = sb.selectbox("User", known["user"], index=None, key="audit_user", placeholder="everyone")
action = sb.selectbox("Action", [*groups, *known["action"]], index=None, key="audit_action",
                      placeholder="every action", help="A group (people) covers its actions (people.decide ...).")
dataset = sb.selectbox("Dataset", known["dataset"], index=None, key="audit_dataset", placeholder="every dataset")
today = datetime.now(timezone.utc).date()
days = sb.date_input("Days (UTC)", (today - timedelta(days=30), today), key="audit_days")
start, end = (days[0], days[-1]) if isinstance(days, (tuple, list)) and days else (None, None)
if isinstance(days, date):
    start = end = days

# -- show --------------------------------------------------------------------------------------
with session_scope(engine) as session:
    rows = query(session, user=user, action=action, dataset=dataset, limit=ROW_LIMIT,
                 since=datetime.combine(start, time.min) if start else None,
                 until=datetime.combine(end, time.max) if end else None)
st.write(f"**{len(rows)}** rows" + (f" (the newest {ROW_LIMIT}; narrow the filters for older ones)"
                                    if len(rows) == ROW_LIMIT else ""))
if not rows:
    st.info("No audit rows match these filters.")
    st.stop()
table = pd.DataFrame([{**r, "before": "" if r["before"] is None else str(r["before"]),
                       "after": "" if r["after"] is None else str(r["after"])} for r in rows])
st.dataframe(table, hide_index=True, key="audit_table",
             column_config={"at": st.column_config.DatetimeColumn("at (UTC)", format="YYYY-MM-DD HH:mm:ss")})
st.download_button("Download CSV", to_csv(rows), file_name="audit.csv", mime="text/csv", on_click="ignore",
                   key="audit_csv")
