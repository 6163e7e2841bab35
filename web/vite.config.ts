import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'

// The dev server proxies the API to a locally running `ci-executor serve`.
const apiTarget = process.env.CI_EXECUTOR_URL ?? 'http://127.0.0.1:10056'

export default defineConfig({
  plugins: [vue()],
  base: '/',
  server: {
    proxy: { '/api': { target: apiTarget, changeOrigin: true } },
  },
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
})
