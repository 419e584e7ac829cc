"""rwkvweb: RWKV language models running entirely inside a web page.

The same package runs in the browser (Pyodide, no numpy) and under CPython,
where a numpy backend is the reference every GPU result is checked against.
Modules that need numpy import it themselves, so `import rwkvweb` works in both.
"""

__version__ = "0.1.0"
