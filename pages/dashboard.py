"""Dashboard (owners and admins): the queue at a glance."""

import streamlit as st

from mesh import ui

ctx = ui.context()
st.title("Dashboard")
st.info("The dashboard is being built.")
