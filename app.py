"""Mesh Marketplace: the frame. Who is signed in, which pages their roles get, then run one."""

import streamlit as st

from mesh import ui, ui_signin

st.set_page_config(page_title="Mesh Marketplace", page_icon=":material/storefront:", layout="wide")

services = ui.services()
user = ui_signin.sign_in(services)
navigation = st.navigation(ui.pages_for(user))
ui_signin.resume_decision_link(user, navigation)
ui_signin.sidebar(services, user)
with ui.guard():
    services.marketplace.check_policy()  # another policy in force: say so on every page
navigation.run()
