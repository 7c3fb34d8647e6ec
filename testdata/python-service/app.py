"""A tiny web service shaped like the continuous-delivery exercise's services."""
import os

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return {"service": "python-service", "version": os.environ.get("VERSION", "dev")}


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "5000")))
