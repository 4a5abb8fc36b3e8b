"""Mesh Marketplace: the frame. Who is signed in, which pages their roles get, then run one."""

import streamlit as st

from mesh import ui

st.set_page_config(page_title="Mesh Marketplace", page_icon=":material/storefront:", layout="wide")

services = ui.services()
user = ui.sign_in(services)
navigation = st.navigation(ui.pages_for(user))
ui.resume_decision_link(user, navigation)
ui.sidebar(services, user)
with ui.guard():
    services.marketplace.check_policy()  # another policy in force: say so on every page
navigation.run()
