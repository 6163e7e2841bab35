import { createRouter, createWebHistory } from 'vue-router'

export const router = createRouter({
  history: createWebHistory(import.meta.env.BASE_URL),
  routes: [
    { path: '/', redirect: '/ci' },
    { path: '/ci', name: 'builds', component: () => import('./views/ci/builds/BuildList.vue'), meta: { title: 'Builds' } },
    { path: '/ci/new', name: 'run', component: () => import('./views/HomeView.vue'), meta: { title: 'Run a build' } },
    // The old per-pipeline list: the same list, filtered.
    { path: '/ci/pipelines/:pipeline_id/builds', redirect: (to) => ({ name: 'builds', query: { ...to.query, pipeline: String(to.params.pipeline_id) } }) },
    {
      path: '/ci/builds/:build_id(\\d+)',
      name: 'build',
      component: () => import('./views/ci/builds/BuildDetail.vue'),
      props: (route) => ({ buildId: Number(route.params.build_id) }),
      meta: { title: 'Build' },
    },
    { path: '/:rest(.*)*', name: 'not-found', component: () => import('./views/NotFound.vue'), meta: { title: 'Not found' } },
  ],
})

router.afterEach((to, from) => {
  // A build page names itself (number and status) once it has loaded; moving within it (job,
  // step and line in the query) keeps that.
  if (to.name === 'build' && from.name === 'build') return
  document.title = `${String(to.meta.title ?? 'ci-executor')} · ci-executor`
})
