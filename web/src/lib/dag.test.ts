import { describe, expect, it } from 'vitest'
import { layoutDag, type DagJob } from './dag'

const job = (name: string, index: number, needs: string[] = []): DagJob => ({ name, index, needs })

describe('layoutDag', () => {
  it('puts each job one layer after the deepest job it needs', () => {
    const l = layoutDag([job('lint', 0), job('build', 1), job('test', 2, ['build']), job('deploy', 3, ['test', 'lint'])])
    expect(l.layers).toEqual([['lint', 'build'], ['test'], ['deploy']])
    const deploy = l.nodes.find((n) => n.name === 'deploy')!
    const test = l.nodes.find((n) => n.name === 'test')!
    expect(deploy.layer).toBe(2)
    expect(deploy.x).toBeGreaterThan(test.x)
  })

  it('draws one edge per need, from the right side of one box to the left side of the next', () => {
    const l = layoutDag([job('a', 0), job('b', 1, ['a'])], [], { nodeWidth: 100, nodeHeight: 40, gapX: 50, gapY: 10, padding: 0 })
    expect(l.edges).toHaveLength(1)
    expect(l.edges[0]).toMatchObject({ from: 'a', to: 'b' })
    expect(l.edges[0]!.path).toMatch(/^M 100 20 C .* 150 20$/)
    expect(l.width).toBe(250)
    expect(l.height).toBe(40)
  })

  it('merges needs with the explicit edge list without duplicates', () => {
    const l = layoutDag([job('a', 0), job('b', 1, ['a']), job('c', 2)], [
      { from_job: 'a', to_job: 'b' },
      { from_job: 'b', to_job: 'c' },
    ])
    expect(l.edges.map((e) => `${e.from}>${e.to}`)).toEqual(['a>b', 'b>c'])
    expect(l.layers).toEqual([['a'], ['b'], ['c']])
  })

  it('orders a layer by the position of the jobs it needs to avoid crossings', () => {
    // x needs the lower root and y the upper one; by index x would come first and cross.
    const l = layoutDag([job('top', 0), job('bottom', 1), job('x', 2, ['bottom']), job('y', 3, ['top'])])
    expect(l.layers[1]).toEqual(['y', 'x'])
  })

  it('centres short layers against the tallest', () => {
    const l = layoutDag([job('a', 0), job('b', 1), job('c', 2), job('d', 3, ['a', 'b', 'c'])], [], { nodeHeight: 40, gapY: 10, padding: 0 })
    const d = l.nodes.find((n) => n.name === 'd')!
    expect(d.y + 20).toBe(l.height / 2)
  })

  it('ignores unknown needs and survives a cycle', () => {
    const l = layoutDag([job('a', 0, ['ghost', 'b']), job('b', 1, ['a'])])
    expect(l.nodes).toHaveLength(2)
    expect(l.edges.every((e) => e.from !== 'ghost')).toBe(true)
  })

  it('lays out an empty graph as nothing', () => {
    expect(layoutDag([])).toMatchObject({ nodes: [], edges: [], width: 0, height: 0 })
  })
})
