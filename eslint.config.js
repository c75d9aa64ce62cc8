// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // Plain Node scripts (bench helpers, the native build): Node's globals.
    files: ["**/*.mjs"],
    languageOptions: {
      globals: {
        process: "readonly",
        Buffer: "readonly",
        console: "readonly",
        setTimeout: "readonly",
        clearTimeout: "readonly",
        URL: "readonly",
      },
    },
  },
  {
    files: ["**/*.ts"],
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-constant-condition": ["error", { checkLoops: false }],
    },
  },
  {
    // One concern per file: product files under 800 lines (tests and test fixtures are exempt).
    files: ["src/**/*.ts"],
    ignores: ["**/*.test.ts", "src/drbd/pair_fixture.ts", "src/drbd/test_support.ts"],
    rules: { "max-lines": ["error", { max: 800, skipBlankLines: false, skipComments: false }] },
  },
);
