"""Mesh Marketplace: the frame. Who is signed in, which pages their roles get, then run one."""

import streamlit as st

from mesh import ui, ui_oidc, ui_signin
from mesh.errors import MeshError

st.set_page_config(page_title="Mesh Marketplace", page_icon=":material/storefront:", layout="wide")

services = ui.services()
# MESH_AUTH=oidc: the identity provider through st.login; otherwise the users file's form.
try:
    user = (ui_oidc if services.settings.auth == "oidc" else ui_signin).sign_in(services)
except MeshError as exc:  # the store failed under it (server down, locked): say so, no trace
    ui.cannot_continue(exc)
navigation = st.navigation(ui.pages_for(user))
ui_signin.resume_decision_link(user, navigation)
ui_signin.sidebar(services, user)
with ui.guard():
    services.marketplace.check_policy()  # another policy in force: say so on every page
navigation.run()
