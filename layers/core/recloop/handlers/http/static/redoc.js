// The OpenAPI document that /docs serves, read relative to this page (/redoc and /docs share their parent).
"use strict";
Redoc.init("docs?format=json", { hideDownloadButton: false, expandResponses: "200,201,202" }, document.getElementById("redoc"));
