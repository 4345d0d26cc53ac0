import { resolve } from "node:path";
import { defineConfig } from "vite";

// Three pages, with relative paths so that dist/ works from any root:
// `conversations serve --web-root examples/web/dist`, or any static host.
export default defineConfig({
  base: "./",
  build: {
    rollupOptions: {
      input: {
        index: resolve(import.meta.dirname, "index.html"),
        widget: resolve(import.meta.dirname, "widget.html"),
        inbox: resolve(import.meta.dirname, "inbox.html"),
      },
    },
  },
});
