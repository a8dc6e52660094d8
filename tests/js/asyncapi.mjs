// Parse an AsyncAPI document with the AsyncAPI parser; exit 1 when any diagnostic is an error.
// Usage: node tests/js/asyncapi.mjs <url or file>. Prints {errors, warnings, channels, operations} as JSON.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const source = process.argv[2];
if (!source) {
  console.error("usage: node tests/js/asyncapi.mjs <url or file>");
  process.exit(2);
}
const text = /^https?:\/\//.test(source)
  ? await (await fetch(source)).text()
  : await readFile(source, "utf8");

const { document, diagnostics } = await new Parser().parse(text);
const describe = (d) => ({ code: d.code, message: d.message, path: d.path.join("/") });
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(describe);
const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).map(describe);
console.log(JSON.stringify({
  errors: errors.slice(0, 50),
  errorCount: errors.length,
  warnings,
  channels: document ? document.channels().all().map((c) => c.address()) : [],
  operations: document ? document.operations().all().length : 0,
}));
process.exit(errors.length || !document ? 1 : 0);
