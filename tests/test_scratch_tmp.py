from streamlit.testing.v1 import AppTest
def test_x(aws_env, monkeypatch):
    for k, v in aws_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MESH_COOKIE_KEY", "x" * 48)
    at = AppTest.from_file("/work/main/app.py", default_timeout=30).run()
    print(at._registered_pages)
    at.text_input[0].input("carol"); at.text_input[1].input("mesh-demo")
    at.button[0].click().run()
    print(at._registered_pages)
    at.run()
    print(at._registered_pages)
    print([ (e.type, getattr(e,'value',None)) for e in at.main])
