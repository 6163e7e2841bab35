import { createRouter, createWebHistory } from 'vue-router'

export const router = createRouter({
  history: createWebHistory(import.meta.env.BASE_URL),
  routes: [
    { path: '/', redirect: '/ci' },
    { path: '/ci', name: 'home', component: () => import('./views/HomeView.vue'), meta: { title: 'Run a build' } },
    {
      path: '/ci/pipelines/:pipeline_id/builds',
      name: 'builds',
      component: () => import('./views/ci/builds/BuildList.vue'),
      props: true,
      meta: { title: 'Builds' },
    },
    {
      path: '/ci/builds/:build_id',
      name: 'build',
      component: () => import('./views/ci/builds/BuildDetail.vue'),
      props: (route) => ({ buildId: Number(route.params.build_id) }),
      meta: { title: 'Build' },
    },
    { path: '/:rest(.*)*', name: 'not-found', component: () => import('./views/NotFound.vue'), meta: { title: 'Not found' } },
  ],
})

router.afterEach((to) => {
  document.title = `${String(to.meta.title ?? 'ci-executor')} · ci-executor`
})
